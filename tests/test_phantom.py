"""The digital phantom: deterministic, the right counts and layout, masks on the lesions, clear errors."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mrisynth.config import load_config
from mrisynth.data import phantom
from mrisynth.data.phantom import PhantomConfig, run_phantom
from mrisynth.errors import UserError

CLASSES = ("glioma", "meningioma", "pituitary")


def tiny(**changes) -> PhantomConfig:
    base = dict(patients=6, slices_per_patient=2, size=32, seed=3, workers=1)
    return PhantomConfig(**{**base, **changes})


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_metadata(root: Path) -> list[dict]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
    a = file_bytes(run_phantom(tiny(), tmp_path / "a"))
    b = file_bytes(run_phantom(tiny(), tmp_path / "b"))
    c = file_bytes(run_phantom(tiny(workers=2), tmp_path / "c"))
    assert a == b
    # config.yaml records `workers`, which may differ; every image, mask and the metadata must not.
    a.pop("config.yaml"), c.pop("config.yaml")
    assert a == c


def test_different_seed_gives_different_images(tmp_path):
    a = file_bytes(run_phantom(tiny(seed=1), tmp_path / "a"))
    b = file_bytes(run_phantom(tiny(seed=2), tmp_path / "b"))
    images_a = {k: v for k, v in a.items() if k.startswith("images")}
    images_b = {k: v for k, v in b.items() if k.startswith("images")}
    assert images_a and images_a != images_b


def test_layout_counts_and_patient_ids(tmp_path):
    cfg = tiny(patients=7, slices_per_patient=3)
    out = run_phantom(cfg, tmp_path / "ph")
    rows = read_metadata(out)
    assert len(rows) == 7 * 3
    assert len({r["id"] for r in rows}) == len(rows)
    assert sorted({r["patient_id"] for r in rows}) == [f"P{i:04d}" for i in range(1, 8)]
    per_patient = Counter(r["patient_id"] for r in rows)
    assert set(per_patient.values()) == {3}
    classes_of = {}
    for r in rows:
        classes_of.setdefault(r["patient_id"], set()).add(r["class"])
        image = out / "images" / r["class"] / f"{r['id']}.png"
        mask = out / "masks" / r["class"] / f"{r['id']}.png"
        with Image.open(image) as img, Image.open(mask) as m:
            assert img.mode == "L" and img.size == (32, 32)
            assert m.mode == "L" and set(np.unique(np.asarray(m))) <= {0, 255}
    assert all(len(c) == 1 for c in classes_of.values()), "a patient must carry one class"
    # 7 patients in equal shares: 3/2/2, every class present.
    assert sorted(Counter(c.pop() for c in classes_of.values()).values()) == [2, 2, 3]
    # Slices of one patient lie at different levels.
    levels = [float(r["level"]) for r in rows if r["patient_id"] == "P0001"]
    assert len(set(levels)) == 3
    n_files = sum(1 for _ in (out / "images").rglob("*.png"))
    assert n_files == 21 and sum(1 for _ in (out / "masks").rglob("*.png")) == 21
    assert load_config(PhantomConfig, out / "config.yaml") == cfg


def test_class_shares_are_respected(tmp_path):
    cfg = tiny(patients=10, slices_per_patient=1, class_shares={"glioma": 3.0, "meningioma": 1.0, "pituitary": 1.0})
    rows = read_metadata(run_phantom(cfg, tmp_path / "ph"))
    assert Counter(r["class"] for r in rows) == {"glioma": 6, "meningioma": 2, "pituitary": 2}


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_dilation(mask, iterations=1)


def test_masks_mark_lesions_with_the_designed_contrast(tmp_path):
    # At difficulty 0 every glioma has ring enhancement and every lesion full contrast.
    out = run_phantom(tiny(patients=9, slices_per_patient=2, size=96, difficulty=0.0), tmp_path / "ph")
    for r in read_metadata(out):
        img = np.asarray(Image.open(out / "images" / r["class"] / f"{r['id']}.png"), dtype=float)
        mask = np.asarray(Image.open(out / "masks" / r["class"] / f"{r['id']}.png")) > 0
        assert mask.sum() >= 4, f"{r['id']}: lesion mask nearly empty"
        around = np.median(img[_ring(mask, 3)])
        if r["class"] == "glioma":
            # Bright enhancing rim around a dark necrotic core.
            assert np.percentile(img[mask], 90) > around + 15, r["id"]
            assert np.percentile(img[mask], 10) < np.percentile(img[mask], 90) - 30, r["id"]
        else:
            # Homogeneous enhancement: the lesion is brighter than what surrounds it.
            assert np.median(img[mask]) > around + 10, r["id"]


def test_pituitary_lesions_are_midline_and_meningiomas_touch_the_skull(tmp_path):
    out = run_phantom(tiny(patients=9, slices_per_patient=2, size=64, difficulty=0.0), tmp_path / "ph")
    for r in read_metadata(out):
        mask = np.asarray(Image.open(out / "masks" / r["class"] / f"{r['id']}.png")) > 0
        img = np.asarray(Image.open(out / "images" / r["class"] / f"{r['id']}.png"))
        head = ndimage.binary_fill_holes(img > 20)
        cy, cx = ndimage.center_of_mass(head)
        my, mx = ndimage.center_of_mass(mask)
        radius = np.sqrt(head.sum() / np.pi)
        if r["class"] == "pituitary":
            assert np.hypot(my - cy, mx - cx) < 0.35 * radius, r["id"]
        if r["class"] == "meningioma":
            # Extra-axial: the lesion reaches the outer part of the head (dura / falx), never sits deep only.
            dist_to_edge = ndimage.distance_transform_edt(head)
            assert dist_to_edge[mask].min() < 0.3 * radius or abs(mx - cx) < 0.3 * radius, r["id"]


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"patients": 0}, "--patients"),
        ({"slices_per_patient": 0}, "--slices-per-patient"),
        ({"size": 8}, "--size"),
        ({"difficulty": 1.5}, "--difficulty"),
        ({"class_shares": {"astrocytoma": 1.0}}, "astrocytoma"),
        ({"class_shares": {"glioma": 0.0, "meningioma": 0.0, "pituitary": 0.0}}, "class_shares"),
    ],
)
def test_bad_settings_are_user_errors_and_write_nothing(tmp_path, changes, words):
    with pytest.raises(UserError, match=words):
        run_phantom(tiny(**changes), tmp_path / "ph")
    assert not (tmp_path / "ph").exists()


def test_refuses_to_replace_a_folder_that_is_not_a_phantom(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a phantom"):
        run_phantom(tiny(), precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_a_crash_leaves_no_half_written_folder(tmp_path, monkeypatch):
    calls = []

    def failing(cfg, index, kind):
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(cfg, index, kind)

    real = phantom.render_patient
    monkeypatch.setattr(phantom, "render_patient", failing)
    with pytest.raises(RuntimeError):
        run_phantom(tiny(), tmp_path / "ph")
    assert list(tmp_path.iterdir()) == []


def test_cli_subcommand(tmp_path, capsys):
    from mrisynth.cli import main

    out = tmp_path / "cli"
    assert main(["data", "phantom", "--out", str(out), "--patients", "3", "--slices-per-patient", "2",
                 "--size", "24", "--seed", "5", "--set", "difficulty=0.2", "--set", "workers=1"]) == 0
    assert "3 patients, 6 slices" in capsys.readouterr().out
    assert len(read_metadata(out)) == 6
    cfg = load_config(PhantomConfig, out / "config.yaml")
    assert (cfg.seed, cfg.size, cfg.difficulty) == (5, 24, 0.2)
    assert main(["data", "phantom", "--out", str(tmp_path / "bad"), "--size", "4"]) == 2
    assert "--size" in capsys.readouterr().err


def test_slice_numbers_count_past_99(tmp_path):
    rows = read_metadata(run_phantom(tiny(patients=1, slices_per_patient=101, size=16), tmp_path / "ph"))
    assert [int(r["slice"]) for r in rows] == list(range(101))


def test_a_class_with_share_zero_gets_no_folder_and_prepares(tmp_path):
    from mrisynth.cli import main
    from mrisynth.data.manifest import load_manifest

    src = run_phantom(tiny(class_shares={"glioma": 1.0, "meningioma": 1.0, "pituitary": 0.0}), tmp_path / "ph")
    for kind in ("images", "masks"):
        assert sorted(p.name for p in (src / kind).iterdir()) == ["glioma", "meningioma"]
    assert main(["data", "prepare", str(src), "--split", "patient", "--out", str(tmp_path / "prepared")]) == 0
    assert {r.class_name for r in load_manifest(tmp_path / "prepared")} == {"glioma", "meningioma"}


def test_data_prepare_reads_the_phantom_unchanged(tmp_path):
    """The phantom's layout is what `mrisynth data prepare` reads: ids, classes, patients and masks survive."""
    from mrisynth.cli import main
    from mrisynth.data.manifest import load_manifest

    src, prepared = tmp_path / "ph", tmp_path / "prepared"
    assert main(["data", "phantom", "--out", str(src), "--patients", "30", "--slices-per-patient", "2",
                 "--size", "24", "--set", "workers=1"]) == 0
    assert main(["data", "prepare", str(src), "--split", "patient", "--out", str(prepared)]) == 0
    records = load_manifest(prepared / "manifest.csv")
    meta = {r["id"]: r for r in read_metadata(src)}
    assert sorted(r.id for r in records) == sorted(meta)
    for r in records:
        assert (r.class_name, r.patient_id) == (meta[r.id]["class"], meta[r.id]["patient_id"])
        assert Path(r.mask_path).is_file()
    # A patient-level split keeps each patient's slices together.
    splits_of = {}
    for r in records:
        splits_of.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert main(["data", "phantom", "--out", str(tmp_path / "bad"), "--patients", "0"]) == 2
    assert not (tmp_path / "bad").exists()
