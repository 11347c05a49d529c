"""The ratio ladder and the controls, turned into concrete training sets.

Ratio r adds synthetic images to *all* real training images: class c gets

    proportional:  round_half_up(r * n_c)          (n_c = real training images of class c)
    balanced:      round_half_up(r * n / K)        (n = all real training images, K classes)

Rounding per class (half up) keeps every class count non-decreasing in r, which is what makes the subsets
NESTED: each class's synthetic images are a prefix of one fixed shuffled order of that class's pool, so the 1x
set contains the 0.5x set and conditions differ only by the images added. (A largest-remainder scheme would hit
the total r * n exactly but can shrink a class when r grows; we prefer nesting. The total is within K/2 of r*n.)

Controls, each at a ratio r from `control_ratios`:
    synthetic-only    the synthetic images of ratio r only, no real image; tested on real images.
    real-oversampled  real images only, as many optimisation steps as ratio r would take
                      (samples_per_epoch = n * (1 + r)): separates "more steps" from "more images".
    augment-only      the same compute-matched real-only training, with the classifier's augmentation
                      overridden by `augment_only_classifier` (e.g. stronger augmentation): the augmentation is
                      the only source of new views. It answers "would plain augmentation do what the
                      generator does?".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from mrisynth.data.manifest import ImageRecord, class_counts
from mrisynth.seeding import derive_seed
from mrisynth.study.config import StudyConfig
from mrisynth.study.names import AUGMENT_ONLY, RATIO, REAL_OVERSAMPLED, SYNTHETIC_ONLY, condition_name


@dataclasses.dataclass(frozen=True)
class Condition:
    """One training recipe; `kind` is names.RATIO or one of names.CONTROLS."""

    kind: str
    ratio: float

    @property
    def name(self) -> str:
        return condition_name(self.kind, self.ratio)

    @property
    def uses_synthetic(self) -> bool:
        return self.kind in (RATIO, SYNTHETIC_ONLY) and self.ratio > 0

    @property
    def uses_real(self) -> bool:
        return self.kind != SYNTHETIC_ONLY


@dataclasses.dataclass(frozen=True)
class Trial:
    """One classifier training: a condition, a seed and (with cross-validation) a fold."""

    condition: Condition
    seed: int
    fold: int = -1

    @property
    def name(self) -> str:
        return f"{self.condition.name}-s{self.seed}" + (f"-f{self.fold}" if self.fold >= 0 else "")


def build_conditions(cfg: StudyConfig) -> list[Condition]:
    """The ratio ladder (ascending) followed by the controls at each control ratio."""
    out = [Condition(RATIO, float(r)) for r in sorted({float(r) for r in cfg.ratios})]
    for kind in cfg.controls:
        out += [Condition(kind, float(r)) for r in sorted({float(r) for r in cfg.control_ratios})]
    return out


def build_trials(cfg: StudyConfig) -> list[Trial]:
    """All trials in their fixed order (fold, then seed, then condition): shard i runs indices i, i+n, ..."""
    folds = list(range(cfg.folds)) if cfg.folds else [-1]
    conditions = build_conditions(cfg)
    return [Trial(c, s, f) for f in folds for s in cfg.seeds for c in conditions]


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def synthetic_counts(
    real_counts: dict[str, int], ratio: float, *, allocation: str = "proportional"
) -> dict[str, int]:
    """Synthetic images per class for ratio r (see the module docstring for the rounding)."""
    total = sum(real_counts.values())
    if allocation == "balanced":
        per_class = round_half_up(ratio * total / len(real_counts))
        return {c: per_class for c in real_counts}
    return {c: round_half_up(ratio * n) for c, n in real_counts.items()}


def pool_size_per_class(cfg: StudyConfig, real_counts: dict[str, int]) -> int:
    """Synthetic images per class the pool must hold for the largest condition (at least 1)."""
    needed = 0
    for cond in build_conditions(cfg):
        if cond.uses_synthetic:
            needed = max(needed, *synthetic_counts(real_counts, cond.ratio, allocation=cfg.allocation).values())
    return max(needed, cfg.generator.pool_per_class, 1)


def pool_order(pool: Sequence[ImageRecord], *, fold: int = -1) -> dict[str, list[str]]:
    """One fixed shuffled order of the pool's ids per class; every condition takes prefixes of it."""
    out = {}
    for cls in sorted({r.class_name for r in pool}):
        ids = sorted(r.id for r in pool if r.class_name == cls)
        rng = np.random.default_rng(derive_seed("pool-order", cls, fold))
        out[cls] = [ids[i] for i in rng.permutation(len(ids))]
    return out


@dataclasses.dataclass
class TrainingSet:
    """What one trial trains on: ids of real and synthetic training images, and the epoch length."""

    real_ids: list[str]
    synthetic_ids: list[str]
    samples_per_epoch: int | None
    classifier_overrides: dict


def build_training_set(
    condition: Condition,
    real_train: Sequence[ImageRecord],
    order: dict[str, list[str]],
    *,
    cfg: StudyConfig,
) -> TrainingSet:
    """The training set of `condition`, given the real training records and the pool order."""
    real_counts = class_counts(real_train)
    real_ids = sorted(r.id for r in real_train)
    synthetic_ids: list[str] = []
    if condition.uses_synthetic:
        counts = synthetic_counts(real_counts, condition.ratio, allocation=cfg.allocation)
        for cls, n in counts.items():
            available = order.get(cls, [])
            if n > len(available):
                raise ValueError(f"pool holds {len(available)} '{cls}' images, condition {condition.name} needs {n}")
            synthetic_ids += available[:n]
    samples_per_epoch = None
    overrides: dict = {}
    if condition.kind in (REAL_OVERSAMPLED, AUGMENT_ONLY):
        samples_per_epoch = round_half_up(len(real_ids) * (1 + condition.ratio))
    if condition.kind == AUGMENT_ONLY:
        overrides = dict(cfg.augment_only_classifier)
    if not condition.uses_real:
        real_ids = []
    return TrainingSet(real_ids, synthetic_ids, samples_per_epoch, overrides)
