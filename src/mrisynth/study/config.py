"""StudyConfig: one typed tree holding every step's own settings dataclass, validated when it is loaded.

    cfg = load_config(StudyConfig, "demo", overrides=["classifier.epochs=3"])   # configs/study/demo.yaml

Each section is the dataclass its step uses on its own (`data.prepare` is a PrepareConfig, `classifier` a
ClassifierConfig, `generator.train` the chosen backend's TrainConfig, ...), so a typo or a wrong type at any depth
fails at load with the key's name, before any file is written, and the run's config.yaml is exactly what ran.
Sections name presets of their own step with `base:` (see mrisynth.config), e.g. `classifier: {base: tiny}`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

from mrisynth.classify.config import ClassifierConfig
from mrisynth.config import from_dict, merge_dicts, to_dict
from mrisynth.data.phantom import PhantomConfig
from mrisynth.data.prepare import PrepareConfig
from mrisynth.errors import UserError
from mrisynth.generate import ddpm_config, sd_config
from mrisynth.quality.audit import AuditConfig
from mrisynth.study.names import BASELINE, CONTROLS

PHANTOM = "phantom"
# The backends' settings classes, by `generator.backend` (the modules holding them import nothing heavy).
GENERATOR_CONFIGS: dict[str, tuple[type, type]] = {
    "ddpm": (ddpm_config.TrainConfig, ddpm_config.SampleConfig),
    "sd": (sd_config.TrainConfig, sd_config.SampleConfig),
}
GET_DATA_HINT = ("get the Figshare data with `mrisynth data download figshare --out raw`, then add "
                 "--set data.source=raw/mat (your own copy: its folder; a folder `data prepare` wrote: "
                 "--set data.manifest=FOLDER)")

# Settings that may differ when a run is resumed: they change how fast or how loudly work is done, or only what
# the report computes from finished trials, never what a trial learned from.
RESUMABLE_SETTINGS = (
    "alpha", "bootstrap", "audit", "classifier.device", "classifier.eval_batch_size",
    "generator.train.device", "generator.train.log_every", "generator.sample.device",
)


@dataclasses.dataclass
class DataSettings:
    """Where the real images come from.

    `source`: a folder or file `mrisynth data prepare` reads, or "phantom" for the built-in phantom.
    `manifest`: reuse an already prepared folder (its manifest.csv) instead of preparing; wins over `source`.
    """

    source: str = PHANTOM
    manifest: str = ""
    prepare: PrepareConfig = dataclasses.field(default_factory=PrepareConfig)
    phantom: PhantomConfig = dataclasses.field(default_factory=PhantomConfig)  # used when source is "phantom"

    def __post_init__(self) -> None:
        if not self.source and not self.manifest:
            raise UserError(f"data.source is not set (this preset needs real images): {GET_DATA_HINT}")


@dataclasses.dataclass
class GeneratorSettings:
    """Which generator makes the synthetic pool, and how it is trained (`train`) and sampled (`sample`).

    `train` and `sample` are the chosen backend's own TrainConfig and SampleConfig; `sample.n_per_class` is
    replaced by what the conditions need (or `pool_per_class`).
    """

    backend: Literal["ddpm", "sd"] = "ddpm"
    existing: str = ""  # a trained generator folder to reuse (skips training; not with folds)
    train: Any = None
    sample: Any = None
    pool_per_class: int = 0  # 0: just enough images per class for the largest condition

    @classmethod
    def config_field_types(cls, data: dict) -> dict[str, type]:
        """`train` and `sample` take the types of the backend named in `data` (default ddpm)."""
        backend = data.get("backend", "ddpm")
        train, sample = GENERATOR_CONFIGS.get(backend, GENERATOR_CONFIGS["ddpm"])
        return {"train": train, "sample": sample}

    def __post_init__(self) -> None:
        train, sample = GENERATOR_CONFIGS[self.backend]
        self.train = self.train if self.train is not None else train()
        self.sample = self.sample if self.sample is not None else sample()
        if not isinstance(self.train, train) or not isinstance(self.sample, sample):
            raise UserError(f"generator.train/sample must be {self.backend} settings")
        if self.pool_per_class < 0:
            raise UserError("generator.pool_per_class must be >= 0 (0: as many as the conditions need)")


@dataclasses.dataclass
class AuditSettings:
    enabled: bool = True
    settings: AuditConfig = dataclasses.field(default_factory=AuditConfig)


# Classifier differences applied on top of `classifier` for the augment-only control only: by default a stronger
# version of the same augmentation family (wider rotation, shift, shear and zoom).
STRONGER_AUGMENTATION = {"augment": {"enabled": True, "rotation_deg": 30.0, "shift": 0.15, "shear_deg": 15.0,
                                     "zoom": 0.3}}


@dataclasses.dataclass
class StudyConfig:
    """A ratio ladder x seeds (x folds) study; see study/conditions.py for what each condition trains on."""

    PRESETS: ClassVar[str] = "study"

    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    generator: GeneratorSettings = dataclasses.field(default_factory=GeneratorSettings)
    classifier: ClassifierConfig = dataclasses.field(default_factory=ClassifierConfig)
    ratios: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    folds: int = 0  # 0: use the manifest's train/val/test split; k >= 3: patient-wise k-fold cross-validation
    allocation: Literal["proportional", "balanced"] = "proportional"
    controls: list[str] = dataclasses.field(default_factory=list)  # any of names.CONTROLS
    control_ratios: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    augment_only_classifier: dict = dataclasses.field(default_factory=lambda: dict(STRONGER_AUGMENTATION))
    # Shares of the training patients each arm trains on (and its generator learns from); see study/fractions.py.
    real_fractions: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    # Other labelled sets (another site's scans): prepared folders or <class>/<image> trees, scored in every trial.
    external: list[str] = dataclasses.field(default_factory=list)
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)
    alpha: float = 0.05  # family-wise error rate of the verdicts (Holm-corrected)
    bootstrap: int = 2000  # bootstrap resamples for confidence intervals and paired tests

    def __post_init__(self) -> None:
        if not self.ratios or any(r < 0 for r in self.ratios):
            raise UserError("ratios must be a non-empty list of numbers >= 0, e.g. [0, 0.5, 1, 2]")
        if 0.0 not in [float(r) for r in self.ratios]:
            raise UserError(f"ratios must include 0 (real only, condition {BASELINE}): it is the baseline every "
                            "condition is compared to")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError("seeds must be a non-empty list of distinct integers, e.g. [0, 1, 2]")
        if self.folds in (1, 2) or self.folds < 0:
            raise UserError("folds must be 0 (use the manifest split) or at least 3 (train, val and test folds)")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise UserError(f"unknown control '{unknown[0]}'; use any of {', '.join(CONTROLS)}")
        if self.controls and (not self.control_ratios or any(r <= 0 for r in self.control_ratios)):
            raise UserError("control_ratios must be a non-empty list of numbers > 0 when controls are set")
        if self.folds and self.generator.existing:
            raise UserError("generator.existing cannot be used with folds: each fold trains its own generator")
        if not 0 < self.alpha < 1:
            raise UserError("alpha must be between 0 and 1, e.g. 0.05")
        if self.bootstrap < 100:
            raise UserError("bootstrap must be at least 100 resamples (2000 is the default)")
        if not self.real_fractions or any(not 0 < f <= 1 for f in self.real_fractions) or \
                len(set(self.real_fractions)) != len(self.real_fractions):
            raise UserError("real_fractions must be distinct numbers in (0, 1], e.g. [0.1, 0.25, 0.5, 1.0]")
        external_sets(self)  # every external folder exists and has a name of its own
        if self.generator.train.normalize != self.classifier.normalize:
            raise UserError(f"generator.train.normalize is '{self.generator.train.normalize}' but classifier.normalize "
                            f"is '{self.classifier.normalize}': set both the same, so that synthetic images are "
                            "drawn in the intensity space the classifier sees real ones in")
        classifier_for_trial(self, seed=0, extra=self.augment_only_classifier, where="augment_only_classifier.")


def external_sets(cfg: StudyConfig) -> dict[str, Path]:
    """The external sets by name (their folder's name), in the order given; checked to exist and differ."""
    out: dict[str, Path] = {}
    for entry in cfg.external:
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise UserError(f"external: {entry} is not a folder; give prepared data folders or <class>/<image> trees")
        if path.name in out:
            raise UserError(f"external: two sets are named '{path.name}' ({out[path.name]} and {entry}); give each "
                            "folder its own name")
        out[path.name] = path
    return out


def classifier_for_trial(cfg: StudyConfig, *, seed: int, extra: dict | None = None,
                         where: str = "classifier.") -> ClassifierConfig:
    """The ClassifierConfig of one trial: `classifier`, then `extra` differences, with the trial's seed."""
    data = merge_dicts(to_dict(cfg.classifier), extra or {})
    data["seed"] = seed  # the trial's seed wins: the same seed in every condition keeps the runs paired
    return from_dict(ClassifierConfig, data, where=where)


def sample_config_for_pool(cfg: StudyConfig, *, counts: dict[str, int]) -> Any:
    """The backend's SampleConfig asked for the pool the conditions need: `counts` images of each class."""
    return dataclasses.replace(cfg.generator.sample, counts=dict(counts))
