"""The real-fraction axis: training on a share of the training *patients*, to ask in which data regime synthetic
images help.

For each fraction f, class c keeps the first ceil(f * P_c) of its training patients in one fixed, seeded shuffled
order (P_c: training patients of class c; a patient's class is that of most of its slices). Taking prefixes of
one order makes the subsets NESTED (the 25% patients contain the 10% ones), so a larger fraction only adds
patients. Validation and test images never change: only train rows are dropped. Images without a patient id
count as patients of their own.

    RUN/data[/fold-<k>]/real-<f>/manifest.csv   the fraction's data folder (f = 1 is the fold's folder itself)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrisynth.data.manifest import (
    MANIFEST_NAME,
    ImageRecord,
    load_classes,
    load_manifest,
    save_classes,
    save_manifest,
)
from mrisynth.seeding import derive_seed
from mrisynth.study.names import TRAIN

FULL = 1.0


def patient_of(record: ImageRecord) -> str:
    """The unit that is kept or dropped whole: the patient, or the image itself when it has no patient id."""
    return record.patient_id or f"image:{record.id}"


def patient_order(train: Sequence[ImageRecord], *, fold: int) -> dict[str, list[str]]:
    """Each class's training patients in one seeded shuffled order (sorted first, so file order cannot matter)."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        votes[patient_of(r)][r.class_name] += 1
    by_class: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(votes):
        cls = max(sorted(votes[patient]), key=lambda c: votes[patient][c])  # ties: the first class by name
        by_class[cls].append(patient)
    out = {}
    for cls in sorted(by_class):
        rng = np.random.default_rng(derive_seed("real-fraction", cls, fold))
        patients = by_class[cls]
        out[cls] = [patients[i] for i in rng.permutation(len(patients))]
    return out


def kept_patients(order: dict[str, list[str]], fraction: float) -> set[str]:
    """The training patients a fraction keeps: ceil(f * P_c) of each class (at least one), a prefix of `order`."""
    kept: set[str] = set()
    for patients in order.values():
        n = max(1, math.ceil(fraction * len(patients) - 1e-9))
        kept.update(patients[:n])
    return kept


def subset_records(records: Sequence[ImageRecord], fraction: float, *, fold: int) -> list[ImageRecord]:
    """`records` with the train rows of the patients the fraction drops removed (val and test untouched)."""
    if fraction >= FULL:
        return list(records)
    train = [r for r in records if r.split == TRAIN]
    keep = kept_patients(patient_order(train, fold=fold), fraction)
    return [r for r in records if r.split != TRAIN or patient_of(r) in keep]


def fraction_data_dir(data_dir: Path, fraction: float, *, fold: int) -> Path:
    """The data folder of one fraction, written once beside `data_dir` (`data_dir` itself for f = 1)."""
    if fraction >= FULL:
        return data_dir
    out = data_dir / f"real-{fraction:g}"
    if (out / MANIFEST_NAME).is_file():
        return out
    records = subset_records(load_manifest(data_dir), fraction, fold=fold)
    save_classes(load_classes(data_dir), out)
    save_manifest(records, out / MANIFEST_NAME)  # atomic: a killed run leaves no half manifest
    return out
