"""`mrisynth data ...` end to end: prepare, audit, cache; bad input gives exit code 2, one line, no output."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from mrisynth.cli import main
from mrisynth.data.manifest import load_classes, load_manifest
from test_data_sources import make_mat_dir


def error_lines(err: str) -> list[str]:
    """The lines the CLI wrote as errors (progress bars share stderr and redraw with carriage returns)."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("mrisynth:")]


def make_tree(root: Path, *, patients: int = 12, slices: int = 3) -> Path:
    """images/<class>/<id>.png for 3 classes plus patients.csv (id, patient_id, class), like the shared copy."""
    rng = np.random.default_rng(0)
    rows = ["id,patient_id,class"]
    for p in range(patients):
        name = ("glioma", "meningioma", "pituitary_tumor")[p % 3]
        for s in range(slices):
            i = f"{p}_{s}"
            path = root / "images" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(path)
            rows.append(f"{i},P{p},{name}")
    (root / "patients.csv").write_text("\n".join(rows) + "\n")
    return root


def test_prepare_audit_and_cache_from_the_command_line(tmp_path, capsys):
    src = make_tree(tmp_path / "src")
    out = tmp_path / "data"
    assert main(["data", "prepare", str(src), "--out", str(out), "--split", "patient", "--seed", "3",
                 "--set", "tolerance=0.2"]) == 0
    printed = capsys.readouterr().out
    assert "36 images, 12 patients" in printed and "train" in printed
    records = load_manifest(out)
    assert len(records) == 36 and load_classes(out) == ["glioma", "meningioma", "pituitary"]
    splits = {}
    for r in records:
        splits.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in splits.values())
    config = (out / "config.yaml").read_text()
    assert "split: patient" in config and "seed: 3" in config and "tolerance: 0.2" in config

    assert main(["data", "audit", str(out)]) == 0
    assert "patients spanning splits: 0 of 12" in capsys.readouterr().out
    assert (out / "audit/leakage.json").is_file()

    assert main(["data", "cache", str(out), "--size", "16", "--fit", "letterbox"]) == 0
    assert "36 images at 16 px" in capsys.readouterr().out
    assert np.load(out / "cache/letterbox-16/images.npy").shape == (36, 16, 16)


def test_prepare_replays_a_split_file(tmp_path, capsys):
    src = make_tree(tmp_path / "src", patients=3, slices=2)
    split_csv = tmp_path / "split.csv"
    with open(split_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split"])
        for p in range(3):
            writer.writerows([[f"{p}_0", "train"], [f"{p}_1", ("val", "test", "train")[p]]])
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "d"), "--split", f"file:{split_csv}"]) == 0
    got = {r.id: r.split for r in load_manifest(tmp_path / "d")}
    assert got == {"0_0": "train", "0_1": "val", "1_0": "train", "1_1": "test", "2_0": "train", "2_1": "train"}


def _break_empty_class(src: Path) -> None:
    (src / "images/empty").mkdir()


def _break_corrupt_file(src: Path) -> None:
    (src / "images/glioma/0_0.png").write_bytes(b"not a png at all")


def _break_duplicate_id(src: Path) -> None:
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(src / "images/meningioma/0_0.png")


def _break_class_disagreement(src: Path) -> None:
    text = (src / "patients.csv").read_text().replace("0_1,P0,glioma", "0_1,P0,meningioma")
    (src / "patients.csv").write_text(text)


@pytest.mark.parametrize("breaker, message", [
    (_break_empty_class, "has no images"),
    (_break_corrupt_file, "not a readable image"),
    (_break_duplicate_id, "duplicate image id '0_0'"),
    (_break_class_disagreement, "class disagreement for id 0_1"),
])
def test_bad_tree_input_fails_cleanly(tmp_path, capsys, breaker, message):
    src = make_tree(tmp_path / "src", patients=6, slices=2)
    breaker(src)
    out = tmp_path / "out"
    assert main(["data", "prepare", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(error_lines(err)) == 1 and message in error_lines(err)[0]
    assert not out.exists()


def test_hdf5_without_cjdata_fails_cleanly(tmp_path, capsys):
    src = make_mat_dir(tmp_path / "src", n=3, size=(8, 8))
    with h5py.File(src / "2.mat", "w") as f:
        f.create_dataset("other", data=np.zeros(2))
    out = tmp_path / "out"
    assert main(["data", "prepare", str(src), "--out", str(out), "--split", "seed"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(error_lines(err)) == 1 and "no 'cjdata' group" in error_lines(err)[0]
    assert not out.exists()


def test_missing_source_and_bad_settings_fail_cleanly(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    src = make_tree(tmp_path / "src", patients=3, slices=1)
    assert main(["data", "prepare", str(src), "--out", str(out), "--set", "sead=1"]) == 2
    assert "unknown config key 'sead'" in capsys.readouterr().err
    src_no_pid = tmp_path / "src2"
    make_tree(src_no_pid, patients=3, slices=1)
    (src_no_pid / "patients.csv").unlink()
    assert main(["data", "prepare", str(src_no_pid), "--out", str(out), "--split", "patient"]) == 2
    assert "needs patient ids" in capsys.readouterr().err
    assert not out.exists()


def test_a_refused_rerun_keeps_the_earlier_prepared_folder(tmp_path, capsys):
    # fault 3: a refused re-prepare used to delete the earlier manifest.csv and classes.json
    src = make_tree(tmp_path / "src", patients=6, slices=2)
    out = tmp_path / "out"
    assert main(["data", "prepare", str(src), "--out", str(out), "--split", "seed"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.endswith(".lock")}
    _break_corrupt_file(src)
    assert main(["data", "prepare", str(src), "--out", str(out), "--split", "seed"]) == 2
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.endswith(".lock")}
    assert after == before
    assert {"manifest.csv", "classes.json"} <= set(after)


def test_audit_and_cache_without_a_manifest_fail_cleanly(tmp_path, capsys):
    assert main(["data", "audit", str(tmp_path)]) == 2
    assert main(["data", "cache", str(tmp_path), "--size", "16"]) == 2
    assert "no manifest" in capsys.readouterr().err


@pytest.mark.realdata
def test_figshare_prepare_numbers(figshare_dir, tmp_path, capsys):
    out = tmp_path / "patient"
    assert main(["data", "prepare", str(figshare_dir), "--split", "patient", "--out", str(out)]) == 0
    assert "3064 images, 233 patients" in capsys.readouterr().out
    ref = tmp_path / "ref"
    assert main(["data", "prepare", str(figshare_dir), "--split", f"file:{figshare_dir / 'seed_split.csv'}",
                 "--out", str(ref)]) == 0
    counts = {s: sum(r.split == s for r in load_manifest(ref)) for s in ("train", "val", "test")}
    assert counts == {"train": 2144, "val": 612, "test": 308}


def test_auto_split_keeps_the_splits_of_a_split_tree(tmp_path, capsys):
    rng = np.random.default_rng(5)
    src = tmp_path / "Training_Dataset"
    for split in ("train", "val", "test"):
        for name in ("glioma", "pituitary_tumor"):
            path = src / split / name / f"{split}_{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (30, 26), dtype=np.uint8)).save(path)
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "d")]) == 0
    records = load_manifest(tmp_path / "d")
    assert {(r.id, r.split) for r in records} == {
        (f"{s}_{n}", s) for s in ("train", "val", "test") for n in ("glioma", "pituitary_tumor")
    }
    assert {r.class_name for r in records} == {"glioma", "pituitary"}


def test_prepare_never_writes_into_the_source_or_over_a_users_images(tmp_path, capsys):
    src = make_tree(tmp_path / "src", patients=3, slices=1)
    assert main(["data", "prepare", str(src), "--out", str(src / "prepared")]) == 2
    assert "inside the source folder" in capsys.readouterr().err and not (src / "prepared").exists()
    mats = make_mat_dir(tmp_path / "mats", n=3, size=(8, 8))
    assert main(["data", "prepare", str(mats), "--out", str(src), "--split", "seed"]) == 2
    assert "is not a prepared-data folder: it holds files mrisynth did not write" in capsys.readouterr().err
    assert len(list((src / "images").rglob("*.png"))) == 3  # the user's images are untouched


def test_split_file_named_relative_to_the_source(tmp_path):
    """`--split file:seed_split.csv` finds the file beside the source (how the `seed` preset names it)."""
    src = make_tree(tmp_path / "src", patients=6, slices=2)
    ids = [p.stem for p in sorted((src / "images").rglob("*.png"))]
    splits = ["train", "val", "test"]
    (src / "seed_split.csv").write_text("id,split\n" + "".join(f"{i},{splits[k % 3]}\n" for k, i in enumerate(ids)))
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "out"), "--split", "file:seed_split.csv"]) == 0
    by_id = {r.id: r.split for r in load_manifest(tmp_path / "out")}
    assert by_id == {i: splits[k % 3] for k, i in enumerate(ids)}
