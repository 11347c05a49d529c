"""Leakage audit: patients spanning splits and near-duplicate images across splits are found and written."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from mrisynth.cli import main
from mrisynth.data.audit import near_duplicate_pairs, normalised_thumbnails, run_leakage_audit
from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord, save_classes, save_manifest


def _blobs(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A smooth random picture (sums of Gaussian blobs): unrelated pictures correlate weakly."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size))
    for _ in range(6):
        cy, cx, s = rng.uniform(0, size, 2).tolist() + [rng.uniform(3, 10)]
        img += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


@pytest.fixture
def leaky_dir(tmp_path):
    """12 images; train image t0 has a near copy in test (same patient) and t1 in val (another patient)."""
    rng = np.random.default_rng(0)
    pictures = {f"t{i}": _blobs(rng) for i in range(6)}
    pictures.update({f"v{i}": _blobs(rng) for i in range(3)})
    pictures.update({f"s{i}": _blobs(rng) for i in range(3)})
    noise = rng.normal(0, 2, (48, 48))
    pictures["s0"] = np.clip(pictures["t0"] + noise, 0, 255).astype(np.uint8)
    pictures["v0"] = np.clip(pictures["t1"] + noise, 0, 255).astype(np.uint8)
    patient = {"t0": "A", "s0": "A", "t1": "B", "v0": "C", "v1": "D", "t2": "D"}
    records = []
    for i, (name, arr) in enumerate(pictures.items()):
        path = tmp_path / f"{name}.png"
        save_grayscale_png(arr, path)
        split = {"t": "train", "v": "val", "s": "test"}[name[0]]
        records.append(ImageRecord(id=name, path=str(path), class_name="a" if i % 2 else "b", label=1 - i % 2,
                                   patient_id=patient.get(name, f"P{name}"), split=split))
    data = tmp_path / "data"
    data.mkdir()
    save_manifest(records, data / "manifest.csv")
    save_classes(["a", "b"], data)
    return data


def test_audit_finds_spanning_patients_and_near_duplicates(leaky_dir):
    report = run_leakage_audit(leaky_dir)
    assert report["images"] == 12
    assert report["patients_across_splits"] == 2  # A (train+test) and D (train+val)
    assert report["near_duplicate_pairs"] == 2
    assert report["near_duplicate_pairs_by_splits"] == {"train-val": 1, "train-test": 1, "val-test": 0}
    assert report["near_duplicate_pairs_same_patient"] == 1
    assert report["heldout_images_with_train_duplicate"] == {"val": 1, "test": 1}
    audit = leaky_dir / "audit"
    assert json.loads((audit / "leakage.json").read_text()) == report
    with open(audit / "near_duplicates.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["id_a"], r["id_b"]) for r in rows} == {("t0", "s0"), ("t1", "v0")}
    with open(audit / "patients_across_splits.csv") as f:
        assert {r["patient_id"]: r["splits"] for r in csv.DictReader(f)} == {"A": "train+test", "D": "train+val"}
    assert (audit / "worst_pairs.png").stat().st_size > 1000


def test_a_higher_threshold_finds_fewer_pairs(leaky_dir):
    assert run_leakage_audit(leaky_dir, threshold=0.9999)["near_duplicate_pairs"] == 0


def test_correlation_is_scale_and_offset_invariant():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 200, (1, 8, 8)).astype(np.uint8)
    images = np.concatenate([a, (a // 2 + 40).astype(np.uint8), rng.integers(0, 255, (1, 8, 8), dtype=np.uint8)])
    v = normalised_thumbnails(images)
    assert v[0] @ v[1] > 0.99 and abs(v[0] @ v[2]) < 0.5


def test_pair_search_is_vectorised_fast_enough():
    rng = np.random.default_rng(2)
    n = 3000
    vectors = normalised_thumbnails(rng.integers(0, 255, (n, 32, 32), dtype=np.uint8))
    records = [ImageRecord(id=str(i), path="", class_name="a", label=0, split=("train", "val", "test")[i % 3])
               for i in range(n)]
    start = time.perf_counter()
    assert near_duplicate_pairs(records, vectors, threshold=0.95) == []
    assert time.perf_counter() - start < 5.0


@pytest.mark.realdata
def test_audit_on_figshare_reference_and_patient_splits(figshare_dir, tmp_path):
    from mrisynth.data.prepare import PrepareConfig, run_prepare

    ref = run_prepare(figshare_dir, tmp_path / "ref", PrepareConfig(split=f"file:{figshare_dir / 'seed_split.csv'}"))
    report = run_leakage_audit(ref)
    assert report["patients_across_splits"] == 209 and report["patients"] == 233
    assert report["near_duplicate_pairs_by_splits"]["train-test"] > 50
    pat = run_prepare(figshare_dir, tmp_path / "pat", PrepareConfig(split="patient"))
    patient_report = run_leakage_audit(pat)
    assert patient_report["patients_across_splits"] == 0
    assert patient_report["near_duplicate_pairs"] < report["near_duplicate_pairs"] / 5


def _partner(base: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """`base` plus Gaussian noise scaled so that the pair's correlation is about `r` (measured: within 0.006)."""
    b = base.astype(np.float64)
    noise = rng.normal(0, 1, b.shape) * b.std() * np.sqrt(1 / r**2 - 1)
    return np.clip(np.round(b + noise), 0, 255).astype(np.uint8)


@pytest.fixture
def graded_dir(tmp_path):
    """32 px images (the audit's thumbnail size, so no resize blurs them) with cross-split pairs at set correlations.

    t0-s0: r ~ 0.975, one patient (A)     v0-s1: r ~ 0.975, no patient ids     t1-v1: r ~ 0.925 (B, C)
    """
    rng = np.random.default_rng(5)
    pictures = {name: _blobs(rng, 32) for name in ("t0", "t1", "t2", "t3", "v0", "v2", "s2", "s3")}
    pictures["s0"] = _partner(pictures["t0"], 0.975, rng)
    pictures["s1"] = _partner(pictures["v0"], 0.975, rng)
    pictures["v1"] = _partner(pictures["t1"], 0.925, rng)
    patient = {"t0": "A", "s0": "A", "t1": "B", "v1": "C", "v0": "", "s1": ""}
    records = []
    for i, (name, arr) in enumerate(sorted(pictures.items())):
        path = tmp_path / f"{name}.png"
        save_grayscale_png(arr, path)
        records.append(ImageRecord(id=name, path=str(path), class_name="ab"[i % 2], label=i % 2,
                                   patient_id=patient.get(name, f"P{name}"),
                                   split={"t": "train", "v": "val", "s": "test"}[name[0]]))
    data = tmp_path / "data"
    data.mkdir()
    save_manifest(records, data / "manifest.csv")
    save_classes(["a", "b"], data)
    return data


def _pairs(audit_dir) -> set[tuple[str, str]]:
    with open(audit_dir / "near_duplicates.csv") as f:
        return {(r["id_a"], r["id_b"]) for r in csv.DictReader(f)}


def test_default_threshold_flags_adjacent_slice_copies_not_look_alikes(graded_dir):
    report = run_leakage_audit(graded_dir)
    assert report["threshold"] == 0.95
    assert _pairs(graded_dir / "audit") == {("t0", "s0"), ("v0", "s1")}  # the r ~ 0.925 pair t1-v1 is not one
    assert report["near_duplicate_pairs_by_splits"] == {"train-val": 0, "train-test": 1, "val-test": 1}
    assert report["near_duplicate_pairs_same_patient"] == 1  # images without patient ids are not "one patient"
    assert report["heldout_images_with_train_duplicate"] == {"val": 0, "test": 1}


def test_cli_threshold_is_the_one_applied(graded_dir, capsys):
    assert main(["data", "audit", str(graded_dir), "--threshold", "0.9", "--out", str(graded_dir / "low")]) == 0
    assert _pairs(graded_dir / "low") == {("t0", "s0"), ("v0", "s1"), ("t1", "v1")}
    assert json.loads((graded_dir / "low" / "leakage.json").read_text())["threshold"] == 0.9
    assert "(r >= 0.9): 3" in capsys.readouterr().out
    assert main(["data", "audit", str(graded_dir), "--threshold", "0.999", "--out", str(graded_dir / "high")]) == 0
    assert _pairs(graded_dir / "high") == set()
    assert main(["data", "audit", str(graded_dir), "--out", str(graded_dir / "default")]) == 0
    assert _pairs(graded_dir / "default") == {("t0", "s0"), ("v0", "s1")}
