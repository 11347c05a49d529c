"""The study's shared stages, each done once and skipped when its output is complete: the real data, then per
arm (a fold and a real fraction) its data folder, its generator and its synthetic pool; the audit at the end.

    RUN/data/                                    prepared data (or RUN/data.json pointing at a reused manifest)
    RUN/data[/fold-<k>][/real-<f>]/              an arm's train/val/test manifest (see splits.py, fractions.py)
    RUN/generator[/fold-<k>][/real-<f>]/         the arm's generator, trained on the arm's training patients only
    RUN/synthetic[/fold-<k>][/real-<f>]/         the arm's pool: per class, what its largest condition takes
    RUN/quality/quality.json                     the synthetic-image audit (first arm)

Concurrent shards share these stages through blocking locks in RUN/.locks/: one does the work, the others wait
and then find it done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from filelock import FileLock

from mrisynth.data.manifest import MANIFEST_NAME, class_counts, load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import ensure_writable_dir, write_json
from mrisynth.study import conditions as cond
from mrisynth.study.config import PHANTOM, StudyConfig, sample_config_for_pool
from mrisynth.study.fractions import FULL, fraction_data_dir
from mrisynth.study.names import TRAIN
from mrisynth.study.splits import check_generator_fits_split, fold_data_dir

log = logging.getLogger(__name__)

STAGE_DONE = ".done.json"


@dataclasses.dataclass(frozen=True)
class Arm:
    """What the trials of one fold and one real fraction share: their data folder, generator and pool."""

    fold: int
    fraction: float
    data_dir: Path
    pool_dir: Path | None = None

    @property
    def suffix(self) -> tuple[str, ...]:
        """Sub-folders of this arm under a stage folder: ("fold-1", "real-0.25"), () for the plain study."""
        return ((f"fold-{self.fold}",) if self.fold >= 0 else ()) + (
            (f"real-{self.fraction:g}",) if self.fraction < FULL else ())

    def folder(self, run: Path, stage: str) -> Path:
        return run.joinpath(stage, *self.suffix)

    def lock_name(self, stage: str) -> str:
        return "-".join((stage, *self.suffix))


def stage_lock(run: Path, name: str) -> FileLock:
    """A blocking lock so that concurrent shards do a shared stage once (the others wait, then skip it)."""
    locks = ensure_writable_dir(run / ".locks")
    return FileLock(str(locks / f"{name}.lock"))


def prepare_data(cfg: StudyConfig, run: Path) -> Path:
    """The prepared real data: a reused manifest folder, or RUN/data prepared once (phantom or a source)."""
    if cfg.data.manifest:
        reused = Path(cfg.data.manifest)
        reused = reused.parent if reused.is_file() else reused
        if not (reused / MANIFEST_NAME).is_file():
            raise UserError(f"data.manifest: no {MANIFEST_NAME} in {reused}; give a folder written by `data prepare`")
        write_json(run / "data.json", {"manifest": str(reused.resolve())})
        return reused.resolve()
    data_dir = run / "data"
    with stage_lock(run, "data"):
        if (data_dir / MANIFEST_NAME).is_file():
            return data_dir
        from mrisynth.data.prepare import run_prepare

        source: str | Path = cfg.data.source
        if cfg.data.source == PHANTOM:
            from mrisynth.data.phantom import run_phantom

            log.info("making the phantom data set")
            source = run_phantom(cfg.data.phantom, run / "phantom")
        elif not Path(cfg.data.source).exists():
            raise UserError(f"data.source {cfg.data.source} does not exist; give a data folder, or 'phantom'")
        log.info("preparing data from %s", source)
        run_prepare(source, data_dir, cfg.data.prepare)
    return data_dir


def arm_data(cfg: StudyConfig, run: Path, data_dir: Path, *, fold: int, fraction: float) -> Arm:
    """The arm's data folder: the fold's manifest, then (below 100%) the fraction's training patients only."""
    with stage_lock(run, "-".join(("data", *Arm(fold, fraction, data_dir).suffix))):
        fold_dir = fold_data_dir(cfg, run, data_dir, fold)
        return Arm(fold, fraction, fraction_data_dir(fold_dir, fraction, fold=fold))


def train_generator(cfg: StudyConfig, run: Path, arm: Arm) -> Path:
    """The arm's generator: a given one (checked against the split), or trained once on the arm's train split."""
    if cfg.generator.existing:
        from mrisynth.generate import read_generator_info

        info = read_generator_info(cfg.generator.existing)  # fails clearly when it is not a generator folder
        check_generator_fits_split(info, arm.data_dir, where=f"generator.existing ({cfg.generator.existing})")
        learned = info.get("normalize", "none")  # generators from before the setting learned raw intensities
        if learned != cfg.classifier.normalize:
            raise UserError(f"generator.existing ({cfg.generator.existing}) learned images normalised '{learned}' "
                            f"but classifier.normalize is '{cfg.classifier.normalize}'; use a generator trained "
                            "with the same normalize, or leave generator.existing empty")
        return Path(cfg.generator.existing)
    gen_dir = arm.folder(run, "generator")
    with stage_lock(run, arm.lock_name("generator")):
        if not (gen_dir / STAGE_DONE).is_file():
            from mrisynth.generate import backend_module

            log.info("training the %s generator on %s", cfg.generator.backend, arm.data_dir)
            train = cfg.generator.train
            validate = None
            if train.val_every:  # scored against the arm's real validation slices (quality/generator_validation)
                from mrisynth.quality.generator_validation import build_generator_validation

                validate = build_generator_validation(arm.data_dir, image_size=_generator_size(train),
                                                      fit=getattr(train, "fit", "resize"), seed=train.seed)
            backend_module(cfg.generator.backend).run_train(train, data_dir=arm.data_dir, out_dir=gen_dir,
                                                            validate=validate)
            write_json(gen_dir / STAGE_DONE, {"fold": arm.fold, "fraction": arm.fraction, "finished": time.time()})
    return gen_dir


def _generator_size(train: object) -> int:
    """The training resolution of either backend's TrainConfig (DDPM: image_size, SD: size)."""
    return int(getattr(train, "image_size", None) or train.size)


def generate_pool(cfg: StudyConfig, run: Path, arm: Arm, gen_dir: Path) -> Path:
    """The arm's synthetic pool, generated once: per class, as many images as its largest condition takes."""
    pool_dir = arm.folder(run, "synthetic")
    counts = cond.pool_counts(cfg, class_counts(select(load_manifest(arm.data_dir), split=TRAIN)))
    with stage_lock(run, arm.lock_name("synthetic")):
        if not (pool_dir / STAGE_DONE).is_file():
            from mrisynth.generate import backend_module, read_generator_info

            backend = backend_module(read_generator_info(gen_dir).get("backend", cfg.generator.backend))
            log.info("generating the synthetic pool: %s", ", ".join(f"{n} {c}" for c, n in counts.items()))
            backend.run_sample(gen_dir, sample_config_for_pool(cfg, counts=counts), out_dir=pool_dir)
            write_json(pool_dir / STAGE_DONE, {"counts": counts, "fold": arm.fold, "fraction": arm.fraction})
    return pool_dir


def run_quality_audit(cfg: StudyConfig, run: Path, *, arm: Arm, classifier_dir: Path) -> None:
    """quality/quality.json once; the real-only classifier is passed along when it has finished."""
    out = run / "quality"
    with stage_lock(run, "audit"):
        if (out / "quality.json").is_file():
            return
        from mrisynth.quality import run_audit

        clf = classifier_dir if (classifier_dir / "result.json").is_file() else None
        run_audit(cfg.audit.settings, real_dir=arm.data_dir, synthetic_dir=arm.pool_dir, out_dir=out,
                  classifier_dir=clf)
