"""Validation while a generator trains: draw a small class-balanced set every N steps, score it, keep the best.

The scoring is injected: a `ValidationFn` maps (images (N, S, S) uint8, labels (N,) int64) to a dict of floats
whose keys start with `val_`. `generate/` sits below `quality/`, so it cannot build the scorer itself;
`mrisynth.quality.generator_validation.build_generator_validation` builds the standard one (FD/KID in the
weight-free stats space against real validation slices, and TSTR-lite accuracy), and the CLI and the study pass it.

    GEN/metrics.jsonl   {"step": s, "val_fd": ..., "val_kid": ..., "val_tstr_acc": ...} every `val_every` steps
    GEN/best/           the best-scoring weights so far and best.json {"step", "metric", "value"} (keep_best only)
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mrisynth.errors import UserError
from mrisynth.files import atomic_path, read_json, write_json
from mrisynth.seeding import derive_seed

log = logging.getLogger(__name__)

ValidationFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]
BEST_DIR = "best"
# Which way is better for each metric keep_best may name.
LOWER_IS_BETTER = {"val_fd": True, "val_kid": True, "val_tstr_acc": False}


def check_validation_settings(*, val_every: int, val_per_class: int, keep_best: str,
                              validate: ValidationFn | None) -> None:
    """One-line errors before training starts: validation asked for but impossible, or an unknown metric."""
    if val_every < 0 or val_per_class < 1:
        raise UserError(f"val_every must be 0 (off) or more and val_per_class at least 1; got {val_every}, "
                        f"{val_per_class}")
    if keep_best and keep_best not in LOWER_IS_BETTER:
        raise UserError(f"keep_best must be empty or one of {', '.join(LOWER_IS_BETTER)}; got '{keep_best}'")
    if keep_best and not val_every:
        raise UserError("keep_best needs validation: set val_every to a number of steps as well")
    if val_every and validate is None:
        raise UserError("val_every needs a validation function (the `generator train` command and the study pass "
                        "one); call run_train(..., validate=build_generator_validation(...)) from Python")


def validation_draw(n_classes: int, per_class: int) -> tuple[np.ndarray, list[int]]:
    """The labels (class-balanced, in class order) and the fixed seeds of every validation draw."""
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    seeds = [derive_seed("generator-validation", i) for i in range(len(labels))]
    return labels, seeds


def validation_record(step: int, images: np.ndarray, labels: np.ndarray, validate: ValidationFn) -> dict:
    """{"step": step, val_*: ...} from the validation function, refusing keys that do not start with val_."""
    scores = validate(images, labels)
    bad = [k for k in scores if not k.startswith("val_")]
    if bad:
        raise ValueError(f"validation metric names must start with 'val_'; got {bad}")
    return {"step": step, **{k: float(v) for k, v in scores.items()}}


class BestKeeper:
    """The best validation score so far and the folder its weights live in (GEN/best/)."""

    def __init__(self, out: Path, metric: str, *, resumed_step: int) -> None:
        self.folder = out / BEST_DIR
        self.metric = metric
        self.best: dict | None = None
        if metric and (self.folder / "best.json").is_file():
            saved = read_json(self.folder / "best.json")
            # Best weights from steps after the checkpoint are replayed (identically) by the resumed run.
            if saved.get("metric") == metric and int(saved.get("step", 0)) <= resumed_step:
                self.best = saved
        if self.best is None and self.folder.exists():
            shutil.rmtree(self.folder)

    def improves(self, record: dict) -> bool:
        """True when `record` beats the best so far (NaN never does)."""
        if not self.metric:
            return False
        value = record.get(self.metric)
        if value is None or math.isnan(value):
            return False
        if self.best is None:
            return True
        lower = LOWER_IS_BETTER[self.metric]
        return value < self.best["value"] if lower else value > self.best["value"]

    def save(self, record: dict, write_weights: Callable[[Path], None]) -> None:
        """Replace GEN/best/ with the weights `write_weights(folder)` writes and their best.json, atomically."""
        info = {"step": record["step"], "metric": self.metric, "value": record[self.metric]}
        with atomic_path(self.folder, suffix="") as tmp:
            tmp.mkdir()
            write_weights(tmp)
            write_json(tmp / "best.json", info)
        self.best = info
        log.info("step %d: best %s so far (%.4g)", info["step"], self.metric, info["value"])
