"""StudyConfig: everything one study run needs, composed from the settings of each step.

The settings of other steps (data preparation, generator training and sampling, the classifier, the audit) are
kept here as a preset name plus a dict of differences, and validated against that step's own dataclass when the
study resolves them (`resolve_*` below). The study config thus never duplicates another step's defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mrisynth.config import from_dict, merge_dicts, preset_dict
from mrisynth.errors import UserError

CONTROLS = ("synthetic-only", "real-oversampled", "augment-only")


@dataclasses.dataclass
class DataSettings:
    """Where the real images come from.

    `source`: a folder or file `mrisynth data prepare` reads, or "phantom" for the built-in phantom.
    `manifest`: reuse an already prepared folder (its manifest.csv) instead of preparing; wins over `source`.
    """

    source: str = "phantom"
    manifest: str = ""
    prepare: dict = dataclasses.field(default_factory=dict)  # PrepareConfig differences
    phantom: dict = dataclasses.field(default_factory=dict)  # PhantomConfig differences (source=phantom)


@dataclasses.dataclass
class GeneratorSettings:
    """Which generator makes the synthetic pool, and how it is trained and sampled."""

    backend: str = "ddpm"
    existing: str = ""  # a trained generator folder to reuse (skips training; not with folds)
    train_preset: str | None = None
    train: dict = dataclasses.field(default_factory=dict)  # backend TrainConfig differences
    sample_preset: str | None = None
    sample: dict = dataclasses.field(default_factory=dict)  # backend SampleConfig differences
    pool_per_class: int = 0  # 0: just enough images per class for the largest condition


@dataclasses.dataclass
class AuditSettings:
    enabled: bool = True
    settings: dict = dataclasses.field(default_factory=dict)  # AuditConfig differences


@dataclasses.dataclass
class StudyConfig:
    """A ratio ladder x seeds (x folds) study; see study/conditions.py for what each condition trains on."""

    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    generator: GeneratorSettings = dataclasses.field(default_factory=GeneratorSettings)
    classifier_preset: str = "fast"
    classifier: dict = dataclasses.field(default_factory=dict)  # ClassifierConfig differences
    ratios: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    folds: int = 0  # 0: use the manifest's train/val/test split; k >= 3: patient-wise k-fold cross-validation
    allocation: Literal["proportional", "balanced"] = "proportional"
    controls: list[str] = dataclasses.field(default_factory=list)  # any of CONTROLS
    control_ratios: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    # Classifier differences applied on top of `classifier` for the augment-only control only: by default a
    # stronger version of the same augmentation family (wider rotation, shift, shear and zoom).
    augment_only_classifier: dict = dataclasses.field(default_factory=lambda: {
        "augment": {"enabled": True, "rotation_deg": 30.0, "shift": 0.15, "shear_deg": 15.0, "zoom": 0.3}})
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)
    alpha: float = 0.05  # family-wise error rate of the verdicts (Holm-corrected)
    bootstrap: int = 2000  # bootstrap resamples for confidence intervals and paired tests

    def __post_init__(self) -> None:
        if not self.ratios or any(r < 0 for r in self.ratios):
            raise UserError("ratios must be a non-empty list of numbers >= 0, e.g. [0, 0.5, 1, 2]")
        if 0.0 not in [float(r) for r in self.ratios]:
            raise UserError("ratios must include 0 (real only): it is the baseline every condition is compared to")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError("seeds must be a non-empty list of distinct integers, e.g. [0, 1, 2]")
        if self.folds == 1 or self.folds == 2 or self.folds < 0:
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


def resolve_generator_configs(cfg: StudyConfig, *, n_per_class: int) -> tuple[object, object]:
    """The backend's (TrainConfig, SampleConfig) from preset + differences; the pool size is set here."""
    from mrisynth.generate import backend_module

    backend = backend_module(cfg.generator.backend)
    g = cfg.generator
    train = from_dict(
        backend.TrainConfig,
        merge_dicts(preset_dict(backend.TRAIN_PRESETS, g.train_preset, "generator training"), g.train),
        where="generator.train.",
    )
    sample_data = merge_dicts(preset_dict(backend.SAMPLE_PRESETS, g.sample_preset, "generator sampling"), g.sample)
    sample_data["n_per_class"] = n_per_class
    sample = from_dict(backend.SampleConfig, sample_data, where="generator.sample.")
    return train, sample


def resolve_classifier_config(cfg: StudyConfig, *, seed: int, extra: dict | None = None) -> object:
    """The ClassifierConfig of one trial: preset, then `classifier`, then `extra`, with the trial's seed."""
    from mrisynth.classify import CLASSIFIER_PRESETS, ClassifierConfig

    data = merge_dicts(preset_dict(CLASSIFIER_PRESETS, cfg.classifier_preset, "classifier"), cfg.classifier)
    data = merge_dicts(data, extra or {})
    data["seed"] = seed  # the trial's seed wins over any seed in the preset or the differences
    return from_dict(ClassifierConfig, data, where="classifier.")


def resolve_prepare_config(cfg: StudyConfig) -> object:
    from mrisynth.data.prepare import PrepareConfig

    data = dict(cfg.data.prepare)
    return from_dict(PrepareConfig, data, where="data.prepare.")


def resolve_phantom_config(cfg: StudyConfig) -> object:
    from mrisynth.data.phantom import PhantomConfig

    return from_dict(PhantomConfig, cfg.data.phantom, where="data.phantom.")


def resolve_audit_config(cfg: StudyConfig) -> object:
    from mrisynth.quality import AuditConfig

    return from_dict(AuditConfig, cfg.audit.settings, where="audit.settings.")
