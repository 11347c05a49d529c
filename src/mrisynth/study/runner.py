"""run_study: data -> generator -> synthetic pool -> trials -> audit -> report, in one run directory.

    RUN/config.yaml     the resolved StudyConfig (a rerun must use the same one, but for RESUMABLE_SETTINGS)
    RUN/data/ ...       the real data, and per arm (fold x real fraction) its manifest   (see stages.py)
    RUN/generator/ ...  per arm, the generator trained on that arm's training patients
    RUN/synthetic/ ...  per arm, one pool, sized per class for its largest condition
    RUN/trials/<condition>-s<seed>[-f<k>][-real<f>]/   one classifier each                  (see trial.py)
    RUN/quality/quality.json                 the synthetic-image audit
    RUN/report/                              index.html, report.md, results.csv, summary.json

Every stage is skipped when its output is complete, so a killed run re-run with the same command completes.
Trials are independent: `shard=(i, n)` runs the trials whose index (fixed order, see conditions.build_trials)
is i modulo n.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from filelock import Timeout
from tqdm import tqdm

from mrisynth.errors import UserError
from mrisynth.files import ensure_writable_dir, read_json, write_json
from mrisynth.runfolder import start_run
from mrisynth.study import conditions as cond
from mrisynth.study.config import RESUMABLE_SETTINGS, StudyConfig
from mrisynth.study.names import RATIO
from mrisynth.study.stages import (
    Arm,
    arm_data,
    generate_pool,
    prepare_data,
    run_quality_audit,
    stage_lock,
    train_generator,
)
from mrisynth.study.trial import FAILED, is_done, run_trial, trial_dir, trial_lock

log = logging.getLogger(__name__)


def run_study(
    cfg: StudyConfig,
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    report: Callable[[Path], object] | None = None,
) -> dict:
    """Run (or resume) a whole study into `out_dir`; `report(run)` is called once every trial is done.

    Returns {"trained": names trained now, "already_done": names found finished, "failed": names,
    "skipped_running": names locked by another job, "complete": all trials done, "timings": seconds per stage}.
    """
    run = ensure_writable_dir(out_dir)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard {index}/{count} is invalid: use i/n with 0 <= i < n, e.g. 0/4")
    start_run(run, cfg, resumable=RESUMABLE_SETTINGS)  # a run folder belongs to one config
    timings: dict[str, float] = {}

    with _timed(timings, "data"):
        data_dir = prepare_data(cfg, run)
    arms = build_arms(cfg, run, data_dir, timings)

    trials = cond.build_trials(cfg)
    mine = [t for i, t in enumerate(trials) if i % count == index]
    outcomes: dict[str, list[str]] = {"trained": [], "already_done": [], "failed": [], "running": []}
    with _timed(timings, "trials"):
        for trial in tqdm(mine, desc=f"trials (shard {index}/{count})", unit="trial"):
            outcomes[run_trial(cfg, run, trial, arm=arms[(trial.fold, trial.fraction)])].append(trial.name)

    if cfg.audit.enabled and index == 0:
        with _timed(timings, "audit"):
            first = next(iter(arms.values()))
            baseline = trial_dir(run, cond.Trial(cond.Condition(RATIO, 0.0), cfg.seeds[0], first.fold, first.fraction))
            run_quality_audit(cfg, run, arm=first, classifier_dir=baseline)

    all_done = all(is_done(cfg, run, t) for t in trials)
    if report is not None and all_done:
        with _timed(timings, "report"), stage_lock(run, "report"):  # shards finishing together write it once
            report(run)
    _record_timings(run, timings)
    if outcomes["failed"]:
        log.error("%d trial(s) failed: %s (see trials/<name>/%s)", len(outcomes["failed"]),
                  ", ".join(outcomes["failed"]), FAILED)
    return {"trained": outcomes["trained"], "already_done": outcomes["already_done"], "failed": outcomes["failed"],
            "skipped_running": outcomes["running"], "timings": timings, "complete": all_done}


def build_arms(cfg: StudyConfig, run: Path, data_dir: Path, timings: dict[str, float]) -> dict[tuple, Arm]:
    """Every arm of the study (fold x real fraction) with its generator and pool, keyed by (fold, fraction)."""
    arms = {}
    for fold in cond.study_folds(cfg):
        for fraction in cond.real_fractions(cfg):
            with _timed(timings, "data"):
                arm = arm_data(cfg, run, data_dir, fold=fold, fraction=fraction)
            with _timed(timings, "generator"):
                gen_dir = train_generator(cfg, run, arm)
            with _timed(timings, "synthetic"):
                arms[(fold, fraction)] = Arm(fold, fraction, arm.data_dir, generate_pool(cfg, run, arm, gen_dir))
    return arms


# ---- status ---------------------------------------------------------------------------------------------------


def load_run_config(run: str | os.PathLike) -> StudyConfig:
    """The StudyConfig a run was started with."""
    from mrisynth.config import load_config

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run} is not a study run directory (no config.yaml); start one with `mrisynth study run`")
    try:
        return load_config(StudyConfig, path)
    except UserError as exc:  # e.g. a data or classifier folder, whose config.yaml is another step's
        raise UserError(f"{run} is not a study run directory ({path} is not a study config: {exc})") from exc


def trial_status(run: str | os.PathLike) -> dict[str, str]:
    """Each trial's state: done / running (lock held) / failed / incomplete (started, not running) / pending."""
    run = Path(run)
    cfg = load_run_config(run)
    out = {}
    for trial in cond.build_trials(cfg):
        d = trial_dir(run, trial)
        if is_done(cfg, run, trial):
            out[trial.name] = "done"
            continue
        lock = trial_lock(run, trial)
        try:
            lock.acquire(timeout=0)
            lock.release()
        except Timeout:
            out[trial.name] = "running"
            continue
        out[trial.name] = ("pending" if not d.is_dir() else "failed" if (d / FAILED).is_file() else "incomplete")
    return out


# ---- helpers --------------------------------------------------------------------------------------------------


class _timed:
    """Adds the wall time of a block to timings[name]."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start


def _record_timings(run: Path, timings: dict[str, float]) -> None:
    path = run / "timings.json"
    history = read_json(path) if path.is_file() else []
    history.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": timings})
    write_json(path, history)

