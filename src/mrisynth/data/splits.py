"""Assigning train/val/test: by image, by patient, by patient-wise folds, or replayed from a CSV.

    records = assign_splits(records, "patient", seed=42)

Split specs:

- `seed`: image-level, stratified by class, 70/20/10 with a seed. Adjacent slices of one patient land in
  different splits: this reproduces the reference protocol and its leakage; prefer `patient`.
- `file:PATH`: replay a CSV with columns id,split (e.g. the reference study's seed_split.csv) exactly.
- `patient`: stratified group split 70/20/10. No patient is in two splits, and each split's class shares are
  within `tolerance` (2 points) of the whole data set's. Seeds are tried in turn until the tolerance holds.
- `folds`: k-fold patient-wise cross-validation. The `fold` column holds each image's fold (the source's
  folds, e.g. Figshare's cvind, when given; otherwise made here, numbered 1..k). The `split` column holds the
  *first* arrangement, test = fold 1, val = fold 2, train = the rest, so tools that read only `split` still get
  a leakage-free split; a cross-validation study calls `apply_fold(records, test_fold=f)` for each fold f.
- `keep`: keep the splits the source gave (e.g. `train/`, `val/`, `test/` folders or a split column).

`group_trailing_letter=True` treats patient IDs that differ only in a final letter (MR024780B / MR024780E)
as one person for the patient-level splits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrisynth.data.manifest import SPLITS, ImageRecord, read_keyed_csv
from mrisynth.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.7, 0.2, 0.1)
SPLIT_KINDS = ("seed", "patient", "folds", "keep", "file:PATH")


def assign_splits(
    records: Sequence[ImageRecord],
    spec: str,
    *,
    seed: int = 42,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    tolerance: float = 0.02,
    n_folds: int = 5,
    group_trailing_letter: bool = False,
) -> list[ImageRecord]:
    """Return copies of `records` with `split` (and for `folds`, `fold`) set according to `spec`."""
    records = [dataclasses.replace(r) for r in records]
    _check_fractions(fractions)
    if spec.startswith("file:"):
        return split_from_file(records, spec[len("file:"):])
    if spec == "seed":
        return split_by_image(records, seed=seed, fractions=fractions)
    if spec == "patient":
        return split_by_patient(records, seed=seed, fractions=fractions, tolerance=tolerance,
                                group_trailing_letter=group_trailing_letter)
    if spec == "folds":
        return split_by_folds(records, seed=seed, n_folds=n_folds, tolerance=tolerance,
                              group_trailing_letter=group_trailing_letter)
    if spec == "keep":
        unassigned = sum(r.split not in SPLITS for r in records)
        if unassigned:
            raise UserError(f"--split keep: {unassigned} images have no split in the source; choose another --split")
        return records
    raise UserError(f"unknown split '{spec}'; use one of {', '.join(SPLIT_KINDS)}")


def warn_missing_classes(records: Sequence[ImageRecord]) -> list[str]:
    """Log (and return) one warning per split that lacks a class: its per-class metrics will be undefined."""
    classes = sorted({r.class_name for r in records})
    warnings = []
    for split in SPLITS:
        present = {r.class_name for r in records if r.split == split}
        absent = [c for c in classes if c not in present]
        if absent:
            warnings.append(f"the {split} split has no image of class {', '.join(absent)}: add images of it "
                            "or merge it into another class")
            log.warning(warnings[-1])
    return warnings


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"split fractions must be three positive numbers (train, val, test) summing to 1; got "
                        f"{list(fractions)}")


def patient_key(patient_id: str, *, group_trailing_letter: bool = False) -> str:
    """The id a person is grouped by: `MR024780B` -> `MR024780` when grouping by trailing letter."""
    if group_trailing_letter:
        return re.sub(r"(?<=\d)[A-Za-z]$", "", patient_id)
    return patient_id


# ----------------------------------------------------------------------------------------------- image level

def split_by_image(records: list[ImageRecord], *, seed: int, fractions: Sequence[float]) -> list[ImageRecord]:
    """Stratified image-level split: each class shuffled with `seed` and cut at the fractions."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for rec in records:
        by_class[rec.class_name].append(rec)
    for name in sorted(by_class):
        rows = sorted(by_class[name], key=lambda r: r.id)
        order = rng.permutation(len(rows))
        n_train = round(fractions[0] * len(rows))
        n_val = round(fractions[1] * len(rows))
        for rank, i in enumerate(order):
            rows[i].split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return records


def split_from_file(records: list[ImageRecord], path: str | os.PathLike) -> list[ImageRecord]:
    """Replay a CSV with columns id,split; every image must be listed."""
    from mrisynth.data.sources import normalise_class_name, normalise_split_name

    path = Path(path)
    rows = read_keyed_csv(path, required=("id", "split"), what="split file")  # duplicate ids refused
    missing = [r.id for r in records if r.id not in rows]
    if missing:
        raise UserError(f"split file {path} does not list {len(missing)} image(s), e.g. id {missing[0]}")
    for rec in records:
        row = rows[rec.id]
        split = normalise_split_name(row["split"])
        if split is None:
            raise UserError(f"{path}: split '{row['split']}' of id {rec.id} is not train, val or test")
        if row.get("class") and normalise_class_name(row["class"]) != rec.class_name:
            raise UserError(f"{path}: id {rec.id} is '{row['class']}' there but '{rec.class_name}' in the source")
        rec.split = split
    extra = len(rows) - len(records)
    if extra > 0:
        log.warning("%s lists %d ids that are not in the source", path, extra)
    return records


# ----------------------------------------------------------------------------------------------- patient level

def _groups(records: Sequence[ImageRecord], *, group_trailing_letter: bool, why: str) -> dict[str, list[int]]:
    """Row indices per person; refuses records without patient ids."""
    missing = sum(not r.patient_id for r in records)
    if missing:
        raise UserError(
            f"{why} needs patient ids but {missing} of {len(records)} images have none: add a metadata CSV "
            "(columns id,patient_id) to the source, or use --split seed"
        )
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        groups[patient_key(rec.patient_id, group_trailing_letter=group_trailing_letter)].append(i)
    return dict(sorted(groups.items()))


def assign_groups(
    counts: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Greedy stratified assignment of groups to bins.

    counts: (G, K) images per group and class. Returns (G,) bin index. Groups go largest first (ties and
    near-ties broken at random) to the bin whose class targets they fill least past: this keeps every bin's
    class mix close to the whole's.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    targets = fractions[:, None] * counts.sum(axis=0)[None, :]  # (B, K)
    filled = np.zeros_like(targets)
    sizes = counts.sum(axis=1)
    order = np.argsort(-(sizes * rng.uniform(0.75, 1.25, size=len(sizes))), kind="stable")
    out = np.empty(len(counts), dtype=np.int64)
    for g in order:
        # Relative shortfall of each bin in this group's classes; small bins (test) count as much as big ones.
        shortfall = ((targets - filled) / np.maximum(targets, 1e-9) * counts[g][None, :]).sum(axis=1)
        b = int(np.argmax(shortfall))
        out[g] = b
        filled[b] += counts[g]
    return out


def class_share_gap(labels: np.ndarray, bins: np.ndarray, n_bins: int) -> float:
    """Largest |class share in a bin - class share overall| over bins and classes (1.0 if a bin is empty).

    labels, bins: (N,) class index and bin index of each image.
    """
    n_classes = int(labels.max()) + 1
    overall = np.bincount(labels, minlength=n_classes) / len(labels)
    gap = 0.0
    for b in range(n_bins):
        in_bin = labels[bins == b]
        if len(in_bin) == 0:
            return 1.0
        gap = max(gap, float(np.abs(np.bincount(in_bin, minlength=n_classes) / len(in_bin) - overall).max()))
    return gap


def _group_split(
    records: list[ImageRecord], fractions: Sequence[float], *, seed: int, tolerance: float,
    group_trailing_letter: bool, why: str, max_tries: int = 500,
) -> np.ndarray:
    """(N,) bin per image: groups kept whole, class shares within `tolerance`; tries seeds seed, seed+1, ..."""
    groups = _groups(records, group_trailing_letter=group_trailing_letter, why=why)
    classes = sorted({r.class_name for r in records})
    counts = np.zeros((len(groups), len(classes)), dtype=np.int64)  # (G, K)
    labels = np.array([classes.index(r.class_name) for r in records])  # (N,)
    image_group = np.empty(len(records), dtype=np.int64)  # (N,) group index of each image
    for g, rows in enumerate(groups.values()):
        np.add.at(counts[g], labels[rows], 1)
        image_group[rows] = g
    if len(groups) < len(fractions):
        raise UserError(f"{why} needs at least {len(fractions)} patients; found {len(groups)}")
    best_gap = 2.0
    for attempt in range(max_tries):
        bins = assign_groups(counts, fractions, np.random.default_rng(seed + attempt))[image_group]
        gap = class_share_gap(labels, bins, len(fractions))
        if gap < best_gap:
            best_gap = gap
        if gap <= tolerance:
            log.info("%s: class shares within %.1f points (seed %d, %d patients)", why, 100 * gap,
                     seed + attempt, len(groups))
            return bins
    # Suggest the smallest tolerance (in whole points) that the best assignment found would have met.
    suggested = max(math.ceil(100 * best_gap + 1e-9), math.floor(100 * tolerance) + 1) / 100
    raise UserError(
        f"{why}: no assignment of {len(groups)} patients keeps every class share within {100 * tolerance:.1f} "
        f"points (best {100 * best_gap:.1f} after {max_tries} seeds); raise the tolerance "
        f"(--set tolerance={suggested:g}) or use --split seed"
    )


def split_by_patient(
    records: list[ImageRecord], *, seed: int, fractions: Sequence[float], tolerance: float,
    group_trailing_letter: bool = False,
) -> list[ImageRecord]:
    """Stratified group split: no patient in two splits, class shares within `tolerance` of the whole."""
    bins = _group_split(records, fractions, seed=seed, tolerance=tolerance,
                        group_trailing_letter=group_trailing_letter, why="--split patient")
    for rec, b in zip(records, bins):
        rec.split = SPLITS[int(b)]
    return records


def split_by_folds(
    records: list[ImageRecord], *, seed: int, n_folds: int, tolerance: float, group_trailing_letter: bool = False,
) -> list[ImageRecord]:
    """Patient-wise k folds (the source's when every image has one, else made), then `apply_fold(test=first)`."""
    given = all(r.fold >= 0 for r in records)
    if given:
        _check_given_folds(records, group_trailing_letter=group_trailing_letter)
    else:
        if n_folds < 3:
            raise UserError(f"folds must be at least 3 (test, val and train folds); got {n_folds}")
        bins = _group_split(records, [1.0 / n_folds] * n_folds, seed=seed, tolerance=tolerance,
                            group_trailing_letter=group_trailing_letter, why="--split folds")
        for rec, b in zip(records, bins):
            rec.fold = int(b) + 1
    folds = sorted({r.fold for r in records})
    if len(folds) < 3:
        raise UserError(f"cross-validation needs at least 3 folds; the source gives {len(folds)}")
    return apply_fold(records, test_fold=folds[0])


def _check_given_folds(records: Sequence[ImageRecord], *, group_trailing_letter: bool) -> None:
    if any(not r.patient_id for r in records):
        return  # folds given without patient ids: trust them (nothing to check against)
    fold_of: dict[str, set[int]] = defaultdict(set)
    for rec in records:
        fold_of[patient_key(rec.patient_id, group_trailing_letter=group_trailing_letter)].add(rec.fold)
    spanning = [p for p, f in fold_of.items() if len(f) > 1]
    if spanning:
        log.warning("the source's folds put %d patient(s) in more than one fold, e.g. %s", len(spanning),
                    spanning[0])


def apply_fold(records: Sequence[ImageRecord], *, test_fold: int, val_fold: int | None = None) -> list[ImageRecord]:
    """Copies with split = test for `test_fold`, val for `val_fold` (default: the next fold), train otherwise."""
    folds = sorted({r.fold for r in records})
    if test_fold not in folds:
        raise UserError(f"fold {test_fold} does not exist; folds are {folds}")
    if val_fold is None:
        val_fold = folds[(folds.index(test_fold) + 1) % len(folds)]
    out = []
    for rec in records:
        split = "test" if rec.fold == test_fold else "val" if rec.fold == val_fold else "train"
        out.append(dataclasses.replace(rec, split=split))
    return out
