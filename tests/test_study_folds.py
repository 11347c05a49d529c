"""Cross-validation folds and reused generators in the study runner: no person in two folds, prepared folds
used as prepared (1-based cvind numbering included), a reused generator checked against the run's split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mrisynth.data.manifest import load_classes, load_manifest, save_classes, save_manifest
from mrisynth.data.splits import patient_key
from mrisynth.errors import UserError
from mrisynth.files import write_json
from mrisynth.study import run_study
from test_study_runner import install_fakes, small_config


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


def _families(data_dir: Path, out: Path, *, prepared_folds: bool) -> Path:
    """The tiny data with person families: per class 6 persons, each scanned twice as MR<c><f>E / MR<c><f>B
    (two patient ids, one person); with `prepared_folds`, cvind-style folds 1..3 that keep families whole."""
    records = sorted(load_manifest(data_dir), key=lambda r: (r.label, r.id))
    changed = []
    for i, rec in enumerate(records):
        j = i % 12  # 12 images per class
        family, letter = j // 2, "EB"[j % 2]
        changed.append(dataclasses.replace(rec, patient_id=f"MR{rec.label}{family:02d}{letter}",
                                           fold=1 + family % 3 if prepared_folds else -1))
    save_manifest(changed, out / "manifest.csv")
    save_classes(load_classes(data_dir), out)
    return out


def _family_folds(run: Path, k: int) -> dict[int, set[str]]:
    """Persons (trailing letter dropped) in the test split of each fold manifest; checks train/test apart."""
    tested = {}
    for fold in range(k):
        records = load_manifest(run / "data" / f"fold-{fold}")
        person = {r.id: patient_key(r.patient_id, group_trailing_letter=True) for r in records}
        test = {person[r.id] for r in records if r.split == "test"}
        train = {person[r.id] for r in records if r.split == "train"}
        assert test and not test & train, f"fold {fold}: persons in both train and test: {test & train}"
        tested[fold] = test
    return tested


def test_prepared_one_based_folds_are_used_as_prepared(tiny_manifest_dir, tmp_path, fakes):
    data = _families(tiny_manifest_dir, tmp_path / "cv", prepared_folds=True)
    run = tmp_path / "run"
    run_study(small_config(data, folds=3, seeds=[0], ratios=[0, 1]), run)
    prepared = load_manifest(data)
    for fold, persons in _family_folds(run, 3).items():  # folds 1, 2, 3 become 0, 1, 2
        assert persons == {patient_key(r.patient_id, group_trailing_letter=True) for r in prepared
                           if r.fold == fold + 1}
    tested = [set(_family_folds(run, 3)[f]) for f in range(3)]
    assert not (tested[0] & tested[1] or tested[0] & tested[2] or tested[1] & tested[2])


def test_folds_made_in_the_study_keep_trailing_letter_families_together(tiny_manifest_dir, tmp_path, fakes):
    data = _families(tiny_manifest_dir, tmp_path / "plain", prepared_folds=False)
    cfg = small_config(data, folds=3, seeds=[0], ratios=[0, 1])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prepare=dataclasses.replace(cfg.data.prepare, group_trailing_letter=True)))
    run = tmp_path / "run"
    run_study(cfg, run)
    tested = _family_folds(run, 3)
    assert sum(len(p) for p in tested.values()) == 18  # every person tested in exactly one fold
    assert len(set().union(*tested.values())) == 18
    for fold in range(3):  # the prepare settings' class balance: every class in every test fold
        test = [r for r in load_manifest(run / "data" / f"fold-{fold}") if r.split == "test"]
        assert {r.class_name for r in test} == {"glioma", "meningioma", "pituitary"}


def test_prepared_folds_of_another_count_are_refused(tiny_manifest_dir, tmp_path, fakes):
    data = _families(tiny_manifest_dir, tmp_path / "cv", prepared_folds=True)
    with pytest.raises(UserError, match="prepared with 3 folds"):
        run_study(small_config(data, folds=4, seeds=[0], ratios=[0, 1]), tmp_path / "run")


def _generator(path: Path, data_dir: Path | None) -> Path:
    info = {"backend": "fake", "classes": ["glioma", "meningioma", "pituitary"]}
    if data_dir is not None:
        info["data_dir"] = str(data_dir)
    write_json(path / "generator.json", info)
    return path


def _reuse(data_dir: Path, gen: Path):
    cfg = small_config(data_dir, seeds=[0], ratios=[0, 1])
    return dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, existing=str(gen)))


def test_reused_generator_trained_on_this_split_is_accepted(tiny_manifest_dir, tmp_path, fakes):
    gen = _generator(tmp_path / "gen", tiny_manifest_dir)
    assert run_study(_reuse(tiny_manifest_dir, gen), tmp_path / "run")["complete"]
    assert fakes.trained_on == []  # reused, not trained
    # Another folder whose train split is a subset of this run's train split is fine too.
    subset = tmp_path / "subset"
    records = load_manifest(tiny_manifest_dir)
    save_manifest([r for r in records if r.split == "train"][:10], subset / "manifest.csv")
    save_classes(load_classes(tiny_manifest_dir), subset)
    assert run_study(_reuse(tiny_manifest_dir, _generator(tmp_path / "gen2", subset)), tmp_path / "run2")["complete"]


def test_reused_generator_that_saw_test_images_is_refused(tiny_manifest_dir, tmp_path, fakes):
    other = tmp_path / "other"  # the same images split otherwise: this run's test patients are train there
    records = load_manifest(tiny_manifest_dir)
    swapped = [dataclasses.replace(r, split={"test": "train", "train": "test"}.get(r.split, r.split)) for r in records]
    save_manifest(swapped, other / "manifest.csv")
    save_classes(load_classes(tiny_manifest_dir), other)
    with pytest.raises(UserError, match="not in this run's train split"):
        run_study(_reuse(tiny_manifest_dir, _generator(tmp_path / "gen", other)), tmp_path / "run")
    assert not (tmp_path / "run" / "trials").exists()
    with pytest.raises(UserError, match="does not say which data"):
        run_study(_reuse(tiny_manifest_dir, _generator(tmp_path / "gen-old", None)), tmp_path / "run-old")
