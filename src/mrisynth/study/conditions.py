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
    pretrain-synthetic  pre-train on the synthetic images of ratio r alone, then fine-tune those weights on
                      the real images: about (1 + r) n images an epoch in all, like real-oversampled at r,
                      its compute-matched real-only arm (added with it).

"All real training images" means those of the trial's real fraction (study/fractions.py), so the synthetic
counts follow the real count of that fraction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from mrisynth.data.manifest import ImageRecord, class_counts
from mrisynth.seeding import derive_seed
from mrisynth.study.config import StudyConfig
from mrisynth.study.names import (
    AUGMENT_ONLY,
    PRETRAIN_SYNTHETIC,
    RATIO,
    REAL_OVERSAMPLED,
    SYNTHETIC_ONLY,
    condition_name,
    trial_name,
)


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
        return self.kind in (RATIO, SYNTHETIC_ONLY, PRETRAIN_SYNTHETIC) and self.ratio > 0

    @property
    def uses_real(self) -> bool:
        return self.kind != SYNTHETIC_ONLY


@dataclasses.dataclass(frozen=True)
class Trial:
    """One classifier training: a condition, a seed, (with cross-validation) a fold, and the share of the training
    patients it may use."""

    condition: Condition
    seed: int
    fold: int = -1
    fraction: float = 1.0

    @property
    def name(self) -> str:
        return trial_name(self.condition.name, self.seed, self.fold, self.fraction)


def build_conditions(cfg: StudyConfig) -> list[Condition]:
    """The ratio ladder (ascending) followed by the controls at each control ratio.

    pretrain-synthetic brings its compute-matched real-only arm, real-oversampled, along when it is not listed.
    """
    out = [Condition(RATIO, float(r)) for r in sorted({float(r) for r in cfg.ratios})]
    kinds = list(cfg.controls)
    if PRETRAIN_SYNTHETIC in kinds and REAL_OVERSAMPLED not in kinds:
        kinds.insert(kinds.index(PRETRAIN_SYNTHETIC), REAL_OVERSAMPLED)
    for kind in kinds:
        out += [Condition(kind, float(r)) for r in sorted({float(r) for r in cfg.control_ratios})]
    return out


def build_trials(cfg: StudyConfig) -> list[Trial]:
    """All trials in their fixed order (fold, fraction, seed, condition): shard i runs indices i, i+n, ..."""
    conditions = build_conditions(cfg)
    return [Trial(c, s, f, q) for f in study_folds(cfg) for q in real_fractions(cfg) for s in cfg.seeds
            for c in conditions]


def study_folds(cfg: StudyConfig) -> list[int]:
    """The folds of the study: 0..k-1 under cross-validation, else [-1] (the manifest's own split)."""
    return list(range(cfg.folds)) if cfg.folds else [-1]


def real_fractions(cfg: StudyConfig) -> list[float]:
    """The real fractions, largest first (the full set is what the report leads with)."""
    return sorted({float(f) for f in cfg.real_fractions}, reverse=True)


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


def pool_counts(cfg: StudyConfig, real_counts: dict[str, int]) -> dict[str, int]:
    """Synthetic images each class of the pool must hold: the most any condition takes of that class (at least 1,
    and at least `generator.pool_per_class`). Proportional allocation thus draws fewer images of a small class."""
    needed = dict.fromkeys(real_counts, 0)
    for cond in build_conditions(cfg):
        if cond.uses_synthetic:
            for cls, n in synthetic_counts(real_counts, cond.ratio, allocation=cfg.allocation).items():
                needed[cls] = max(needed[cls], n)
    return {cls: max(n, cfg.generator.pool_per_class, 1) for cls, n in needed.items()}


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
    pretrain_ids: list[str] = dataclasses.field(default_factory=list)  # pretrain-synthetic: phase 1's images


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
    if condition.kind == PRETRAIN_SYNTHETIC:  # phase 1 on the synthetic images alone, phase 2 on the real ones
        return TrainingSet(real_ids, [], None, overrides, pretrain_ids=synthetic_ids)
    return TrainingSet(real_ids, synthetic_ids, samples_per_epoch, overrides)
