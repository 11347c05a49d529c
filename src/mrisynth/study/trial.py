"""One trial: train one classifier on its condition's training set, score it on val, test and every external set.

    RUN/trials/<trial>/trial.json                 what it trained on (counts, seeds, fraction)
    RUN/trials/<trial>/{config.yaml, metrics.jsonl, result.json, predictions.csv, ...}   the classifier run
    RUN/trials/<trial>/pretrain/                  pretrain-synthetic only: phase 1, a classifier run of its own
    RUN/trials/<trial>/external/<set>/{metrics.json, predictions.csv}   each external set (study `external`)

A trial is done when result.json and every external set's metrics.json exist. A file lock per trial lets shards
and restarted jobs share one run directory; a trial whose lock is held elsewhere is skipped as "running". Each
phase is an ordinary classifier run folder, so a killed trial resumes where it stopped, in either phase.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from mrisynth.data.manifest import class_counts, load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import claim_output_dir, write_json
from mrisynth.study import conditions as cond
from mrisynth.study.config import StudyConfig, classifier_for_trial, external_sets
from mrisynth.study.names import TRAIN
from mrisynth.study.stages import Arm, stage_lock

log = logging.getLogger(__name__)

RESULT = "result.json"
FAILED = "failed.json"
PRETRAIN_DIR = "pretrain"
EXTERNAL_DIR = "external"
EXTERNAL_METRICS = "metrics.json"
EXTERNAL_PREDICTIONS = "predictions.csv"


def trial_dir(run: Path, trial: cond.Trial) -> Path:
    return run / "trials" / trial.name


def trial_lock(run: Path, trial: cond.Trial) -> FileLock:
    """Held while a job trains the trial (beside the run's stage locks, so the trial folder holds only what the
    classifier run writes, and the study's own trial.json)."""
    return stage_lock(run, f"trial-{trial.name}")


def external_dir(run: Path, trial: cond.Trial, name: str) -> Path:
    """Where a trial's scores on external set `name` go."""
    return trial_dir(run, trial) / EXTERNAL_DIR / name


def is_done(cfg: StudyConfig, run: Path, trial: cond.Trial) -> bool:
    """Trained, and scored on every external set."""
    return (trial_dir(run, trial) / RESULT).is_file() and all(
        (external_dir(run, trial, name) / EXTERNAL_METRICS).is_file() for name in external_sets(cfg))


def run_trial(cfg: StudyConfig, run: Path, trial: cond.Trial, *, arm: Arm) -> str:
    """Train and score one classifier unless already done.

    Returns "trained", "already_done", "failed" (recorded in failed.json) or "running" (locked by another job).
    """
    out = trial_dir(run, trial)
    lock = trial_lock(run, trial)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return "running"
    try:
        if is_done(cfg, run, trial):
            return "already_done"
        with claim_output_dir(out, "classifier"):  # marked before trial.json, which the classifier run then finds
            (out / FAILED).unlink(missing_ok=True)
            _train(cfg, trial, arm, out)
        _score_external(cfg, run, trial)
        return "trained"
    except UserError:
        raise  # a configuration problem: every trial would fail the same way
    except Exception as exc:  # a crash in one trial must not stop the others; it is recorded and reported
        log.exception("trial %s failed", trial.name)
        write_json(out / FAILED, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return "failed"
    finally:
        lock.release()


def _train(cfg: StudyConfig, trial: cond.Trial, arm: Arm, out: Path) -> None:
    """The classifier run of the trial (after its synthetic pre-training, for pretrain-synthetic)."""
    from mrisynth.classify import TrainData, fit

    real_train = select(load_manifest(arm.data_dir), split=TRAIN)
    pool = load_manifest(arm.pool_dir) if trial.condition.uses_synthetic else []
    tset = cond.build_training_set(trial.condition, real_train, cond.pool_order(pool, fold=trial.fold), cfg=cfg)
    # The same classifier seed in every condition (and fold, and fraction): the runs are paired.
    clf_cfg = classifier_for_trial(cfg, seed=trial.seed, extra=tset.classifier_overrides)
    chosen = set(tset.synthetic_ids) | set(tset.pretrain_ids)
    write_json(out / "trial.json", {
        "condition": trial.condition.name, "kind": trial.condition.kind, "ratio": trial.condition.ratio,
        "seed": trial.seed, "fold": trial.fold, "fraction": trial.fraction, "classifier_seed": trial.seed,
        "train_real": len(tset.real_ids), "train_synthetic": len(tset.synthetic_ids),
        "pretrain_synthetic": len(tset.pretrain_ids),
        "train_patients": len({r.patient_id or r.id for r in real_train}),
        "synthetic_per_class": class_counts(r for r in pool if r.id in chosen),
        "samples_per_epoch": tset.samples_per_epoch,
    })
    with _quiet_unless_debug("mrisynth.classify"):  # the trials bar shows progress; epochs are in metrics.jsonl
        if tset.pretrain_ids:
            phase1 = out / PRETRAIN_DIR
            fit(clf_cfg, TrainData(real_dir=arm.data_dir, synthetic_dir=arm.pool_dir, real_train_ids=[],
                                   synthetic_ids=tset.pretrain_ids), phase1)
            # Fine-tuning starts from phase 1's kept (best validation) weights.
            from mrisynth.classify.checkpoint import BEST_NAME

            clf_cfg = dataclasses.replace(clf_cfg, weights=str(phase1 / BEST_NAME))
        fit(clf_cfg, TrainData(real_dir=arm.data_dir, synthetic_dir=arm.pool_dir if tset.synthetic_ids else None,
                               real_train_ids=tset.real_ids, synthetic_ids=tset.synthetic_ids,
                               samples_per_epoch=tset.samples_per_epoch), out)


def _score_external(cfg: StudyConfig, run: Path, trial: cond.Trial) -> None:
    """The trained classifier on each external set, with its own preprocessing (classify.inference)."""
    from mrisynth.classify.inference import run_evaluate

    for name, path in external_sets(cfg).items():
        target = external_dir(run, trial, name)
        if not (target / EXTERNAL_METRICS).is_file():
            run_evaluate(trial_dir(run, trial), path, out=target)


@contextlib.contextmanager
def _quiet_unless_debug(logger_name: str) -> Iterator[None]:
    """Raise a logger to WARNING for a block, unless the user asked for debug output (-v)."""
    logger = logging.getLogger(logger_name)
    if logger.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)
