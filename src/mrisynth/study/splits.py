"""The study's train/val/test arrangements: one manifest per cross-validation fold, made from the prepared
folds (or from the prepare settings when there are none), and the check that a reused generator never saw
images this run validates or tests on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mrisynth.data.manifest import (
    MANIFEST_NAME,
    ImageRecord,
    load_classes,
    load_manifest,
    save_classes,
    save_manifest,
    select,
)
from mrisynth.data.splits import split_by_folds
from mrisynth.errors import UserError
from mrisynth.study.config import StudyConfig


def fold_data_dir(cfg: StudyConfig, run: Path, data_dir: Path, fold: int) -> Path:
    """Without folds: the data folder itself. With fold k of K: a manifest where fold k is test,
    fold (k+1) mod K is validation (used to choose epochs and the best ratio) and the rest is train."""
    if fold < 0:
        return data_dir
    out = run / "data" / f"fold-{fold}"
    if (out / MANIFEST_NAME).is_file():
        return out
    records = load_manifest(data_dir)
    folds = _patient_folds(cfg, records)
    for rec in records:
        f = folds[rec.id]
        rec.fold = f
        rec.split = "test" if f == fold else "val" if f == (fold + 1) % cfg.folds else "train"
    save_classes(load_classes(data_dir), out)
    save_manifest(records, out / MANIFEST_NAME)
    return out


def _patient_folds(cfg: StudyConfig, records: list[ImageRecord]) -> dict[str, int]:
    """Fold 0..k-1 of each image id: the manifest's prepared folds when every image has one (their k sorted
    values, e.g. cvind's 1..k, mapped to 0..k-1), else made here by `split_by_folds` with this study's prepare
    settings (seed, tolerance, group_trailing_letter): whole persons per fold, class shares balanced."""
    k = cfg.folds
    prep = cfg.data.prepare
    with_folds = split_by_folds([dataclasses.replace(r) for r in records], seed=prep.seed, n_folds=k,
                                tolerance=prep.tolerance, group_trailing_letter=prep.group_trailing_letter)
    values = sorted({r.fold for r in with_folds})
    if len(values) != k:  # only prepared folds can disagree: split_by_folds makes exactly k
        raise UserError(f"folds={k} but the manifest was prepared with {len(values)} folds; set folds="
                        f"{len(values)}, or prepare the data again with --split folds --set folds={k}")
    index = {v: i for i, v in enumerate(values)}
    return {r.id: index[r.fold] for r in with_folds}


def check_generator_fits_split(info: dict, data_dir: Path, *, where: str) -> None:
    """Refuse a reused generator that may have seen this run's validation or test images.

    It passes when it was trained on this very data folder, or when every image of its training split is in
    this run's train split (e.g. the same split prepared again). Otherwise synthetic images could carry
    test images into training and inflate every synthetic condition.
    """
    trained_on = info.get("data_dir")
    if not trained_on:
        raise UserError(f"{where}: generator.json does not say which data it was trained on; retrain it with "
                        "`mrisynth generator train`, or leave generator.existing empty to train one in the study")
    trained_on = Path(trained_on)
    if trained_on.resolve() == Path(data_dir).resolve():
        return
    if not (trained_on / MANIFEST_NAME).is_file():
        raise UserError(f"{where}: it was trained on {trained_on}, which is gone, so its training images cannot "
                        "be checked against this run's split; restore that folder or train a new generator")
    seen = {r.id for r in select(load_manifest(trained_on), split="train")}
    ours = {r.id for r in select(load_manifest(data_dir), split="train")}
    outside = sorted(seen - ours)
    if outside:
        raise UserError(f"{where}: {len(outside)} of its {len(seen)} training images (e.g. {outside[0]}) are not "
                        f"in this run's train split ({data_dir}), so they may be validation or test images here; "
                        "use a generator trained on this split, or leave generator.existing empty")
