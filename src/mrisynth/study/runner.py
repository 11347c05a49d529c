"""run_study: data -> generator -> synthetic pool -> trials -> audit -> report, in one run directory.

    RUN/config.yaml                          the resolved StudyConfig (a rerun must use the same one)
    RUN/data/                                prepared data (or RUN/data.json pointing at a reused manifest)
    RUN/data/fold-<k>/                       with cross-validation: that fold's train/val/test manifest
    RUN/generator[/fold-<k>]/                the trained generator (train split of that fold only)
    RUN/synthetic[/fold-<k>]/                one pool, large enough for the biggest condition
    RUN/trials/<condition>-s<seed>[-f<k>]/   one classifier each: trial.json, result.json, predictions.csv, ...
    RUN/quality/quality.json                 the synthetic-image audit
    RUN/report/                              index.html, report.md, results.csv, summary.json

Every stage is skipped when its output is complete, so a killed run re-run with the same command completes.
Trials are independent: `shard=(i, n)` runs the trials whose index (fixed order, see conditions.build_trials)
is i modulo n. A file lock per trial lets shards and restarted jobs share one run directory safely; a trial
whose lock is held elsewhere is skipped as "running".
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout
from tqdm import tqdm

from mrisynth.config import check_resumable, save_config, to_dict
from mrisynth.data.manifest import (
    MANIFEST_NAME,
    class_counts,
    load_manifest,
    select,
)
from mrisynth.errors import UserError
from mrisynth.files import ensure_writable_dir, read_json, write_json
from mrisynth.study import conditions as cond
from mrisynth.study.config import (
    PHANTOM,
    RESUMABLE_SETTINGS,
    StudyConfig,
    classifier_for_trial,
    sample_config_for_pool,
)
from mrisynth.study.names import RATIO
from mrisynth.study.splits import check_generator_fits_split, fold_data_dir

log = logging.getLogger(__name__)

RESULT = "result.json"
FAILED = "failed.json"
STAGE_DONE = ".done.json"


def run_study(
    cfg: StudyConfig, out_dir: str | os.PathLike, *, shard: tuple[int, int] = (0, 1), make_report: bool = True
) -> dict:
    """Run (or resume) a whole study into `out_dir`.

    Returns {"trained": names trained now, "already_done": names found finished, "failed": names,
    "skipped_running": names locked by another job, "complete": all trials done, "timings": seconds per stage}.
    """
    run = ensure_writable_dir(out_dir)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard {index}/{count} is invalid: use i/n with 0 <= i < n, e.g. 0/4")
    _check_or_save_config(cfg, run)
    timings: dict[str, float] = {}

    with _timed(timings, "data"):
        data_dir = prepare_data(cfg, run)
    folds = list(range(cfg.folds)) if cfg.folds else [-1]
    pools = {}
    for fold in folds:
        fold_dir = fold_data_dir(cfg, run, data_dir, fold)
        with _timed(timings, "generator"):
            gen_dir = train_generator(cfg, run, fold_dir, fold)
        with _timed(timings, "synthetic"):
            pools[fold] = (fold_dir, generate_pool(cfg, run, gen_dir, fold_dir, fold))

    trials = cond.build_trials(cfg)
    mine = [t for i, t in enumerate(trials) if i % count == index]
    trained, already, failed, busy = [], [], [], []
    with _timed(timings, "trials"):
        for trial in tqdm(mine, desc=f"trials (shard {index}/{count})", unit="trial"):
            fold_dir, pool_dir = pools[trial.fold]
            outcome = run_trial(cfg, run, trial, data_dir=fold_dir, pool_dir=pool_dir)
            {"trained": trained, "already_done": already, "failed": failed, "running": busy}[outcome].append(
                trial.name)

    if cfg.audit.enabled and index == 0:
        with _timed(timings, "audit"):
            fold_dir, pool_dir = pools[folds[0]]
            baseline = run / "trials" / cond.Trial(cond.Condition(RATIO, 0.0), cfg.seeds[0], folds[0]).name
            run_quality_audit(cfg, run, real_dir=fold_dir, pool_dir=pool_dir, classifier_dir=baseline)

    all_done = all((run / "trials" / t.name / RESULT).is_file() for t in trials)
    if make_report and all_done:
        from mrisynth.report import run_report

        with _timed(timings, "report"), _stage_lock(run, "report"):  # shards finishing together write it once
            run_report(run)
    _record_timings(run, timings)
    if failed:
        log.error("%d trial(s) failed: %s (see trials/<name>/%s)", len(failed), ", ".join(failed), FAILED)
    return {"trained": trained, "already_done": already, "failed": failed, "skipped_running": busy,
            "timings": timings, "complete": all_done}


# ---- stages ---------------------------------------------------------------------------------------------------


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
    with _stage_lock(run, "data"):
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


def train_generator(cfg: StudyConfig, run: Path, data_dir: Path, fold: int) -> Path:
    """The generator for this fold: a given one, or trained once on the fold's train split."""
    if cfg.generator.existing:
        from mrisynth.generate import read_generator_info

        info = read_generator_info(cfg.generator.existing)  # fails clearly when it is not a generator folder
        check_generator_fits_split(info, data_dir, where=f"generator.existing ({cfg.generator.existing})")
        return Path(cfg.generator.existing)
    gen_dir = run / "generator" / f"fold-{fold}" if fold >= 0 else run / "generator"
    with _stage_lock(run, f"generator{fold if fold >= 0 else ''}"):
        if not (gen_dir / STAGE_DONE).is_file():
            from mrisynth.generate import backend_module

            log.info("training the %s generator%s", cfg.generator.backend, f" for fold {fold}" if fold >= 0 else "")
            backend_module(cfg.generator.backend).run_train(cfg.generator.train, data_dir=data_dir, out_dir=gen_dir)
            write_json(gen_dir / STAGE_DONE, {"fold": fold, "finished": time.time()})
    return gen_dir


def generate_pool(cfg: StudyConfig, run: Path, gen_dir: Path, data_dir: Path, fold: int) -> Path:
    """One synthetic pool per fold, generated once, big enough for the largest condition."""
    pool_dir = run / "synthetic" / f"fold-{fold}" if fold >= 0 else run / "synthetic"
    train = select(load_manifest(data_dir), split="train")
    n_per_class = cond.pool_size_per_class(cfg, class_counts(train))
    with _stage_lock(run, f"synthetic{fold if fold >= 0 else ''}"):
        if not (pool_dir / STAGE_DONE).is_file():
            from mrisynth.generate import backend_module, read_generator_info

            sample_cfg = sample_config_for_pool(cfg, n_per_class=n_per_class)
            backend = backend_module(read_generator_info(gen_dir).get("backend", cfg.generator.backend))
            log.info("generating the synthetic pool: %d images per class", n_per_class)
            backend.run_sample(gen_dir, sample_cfg, out_dir=pool_dir)
            write_json(pool_dir / STAGE_DONE, {"n_per_class": n_per_class, "fold": fold})
    return pool_dir


def run_trial(cfg: StudyConfig, run: Path, trial: cond.Trial, *, data_dir: Path, pool_dir: Path) -> str:
    """Train one classifier unless already done.

    Returns "trained", "already_done", "failed" (recorded in failed.json) or "running" (locked by another job).
    """
    from mrisynth.classify import TrainData, fit

    trial_dir = ensure_writable_dir(run / "trials" / trial.name)
    lock = FileLock(str(trial_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return "running"
    try:
        if (trial_dir / RESULT).is_file():
            return "already_done"
        records = load_manifest(data_dir)
        real_train = select(records, split="train")
        pool = load_manifest(pool_dir) if trial.condition.uses_synthetic else []
        order = cond.pool_order(pool, fold=trial.fold)
        tset = cond.build_training_set(trial.condition, real_train, order, cfg=cfg)
        chosen = set(tset.synthetic_ids)
        seed = trial.seed  # the same classifier seed in every condition (and fold): paired runs
        clf_cfg = classifier_for_trial(cfg, seed=seed, extra=tset.classifier_overrides)
        write_json(trial_dir / "trial.json", {
            "condition": trial.condition.name, "kind": trial.condition.kind, "ratio": trial.condition.ratio,
            "seed": trial.seed, "fold": trial.fold, "classifier_seed": seed,
            "train_real": len(tset.real_ids), "train_synthetic": len(tset.synthetic_ids),
            "synthetic_per_class": class_counts(r for r in pool if r.id in chosen),
            "samples_per_epoch": tset.samples_per_epoch,
        })
        (trial_dir / FAILED).unlink(missing_ok=True)
        data = TrainData(
            real_dir=data_dir,
            synthetic_dir=pool_dir if tset.synthetic_ids else None,
            real_train_ids=tset.real_ids,
            synthetic_ids=tset.synthetic_ids,
            samples_per_epoch=tset.samples_per_epoch,
        )
        with _quiet_unless_debug("mrisynth.classify"):  # the trials bar shows progress; epochs are in metrics.jsonl
            fit(clf_cfg, data, trial_dir)
        return "trained"
    except UserError:
        raise  # a configuration problem: every trial would fail the same way
    except Exception as exc:  # a crash in one trial must not stop the others; it is recorded and reported
        log.exception("trial %s failed", trial.name)
        write_json(trial_dir / FAILED, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return "failed"
    finally:
        lock.release()


def run_quality_audit(cfg: StudyConfig, run: Path, *, real_dir: Path, pool_dir: Path, classifier_dir: Path) -> None:
    """quality/quality.json once; the real-only classifier is passed along when it has finished."""
    out = run / "quality"
    with _stage_lock(run, "audit"):
        if (out / "quality.json").is_file():
            return
        from mrisynth.quality import run_audit

        clf = classifier_dir if (classifier_dir / RESULT).is_file() else None
        run_audit(cfg.audit.settings, real_dir=real_dir, synthetic_dir=pool_dir, out_dir=out,
                  classifier_dir=clf)


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
    out = {}
    for trial in cond.build_trials(load_run_config(run)):
        d = run / "trials" / trial.name
        if (d / RESULT).is_file():
            out[trial.name] = "done"
        elif not d.is_dir():
            out[trial.name] = "pending"
        else:
            lock = FileLock(str(d / ".lock"))
            try:
                lock.acquire(timeout=0)
                lock.release()
                out[trial.name] = "failed" if (d / FAILED).is_file() else "incomplete"
            except Timeout:
                out[trial.name] = "running"
    return out


# ---- helpers --------------------------------------------------------------------------------------------------


def _check_or_save_config(cfg: StudyConfig, run: Path) -> None:
    """A run directory belongs to one config: resuming with another would mix incomparable trials.

    Only the settings in RESUMABLE_SETTINGS may change on resume; config.yaml then holds the new values.
    """
    path = run / "config.yaml"
    if path.is_file():
        saved = to_dict(load_run_config(run))
        if check_resumable(saved, to_dict(cfg), resumable=RESUMABLE_SETTINGS, where=str(run)):
            save_config(cfg, path)
        return
    save_config(cfg, path)


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


def _stage_lock(run: Path, name: str) -> FileLock:
    """A blocking lock so that concurrent shards do a shared stage once (the others wait, then skip it)."""
    locks = ensure_writable_dir(run / ".locks")
    return FileLock(str(locks / f"{name}.lock"))


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

