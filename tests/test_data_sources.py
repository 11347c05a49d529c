"""Readers: Figshare v7.3 .mat files, image trees (flat and split), masks, metadata CSV, class names."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from mrisynth.data.images import read_grayscale
from mrisynth.data.sources import detect_source_kind, normalise_class_name, read_source
from mrisynth.errors import UserError


def write_figshare_mat(path: Path, *, label: int, pid: str, image: np.ndarray, mask: np.ndarray | None = None) -> None:
    """A file shaped like Figshare's MATLAB v7.3 slices: HDF5 group cjdata, arrays stored transposed."""
    with h5py.File(path, "w") as f:
        cj = f.create_group("cjdata")
        cj.create_dataset("label", data=np.array([[float(label)]]))
        cj.create_dataset("PID", data=np.array([[ord(c)] for c in pid], dtype=np.uint16))
        cj.create_dataset("image", data=image.astype(np.int16).T)  # MATLAB is column-major
        if mask is not None:
            cj.create_dataset("tumorMask", data=mask.astype(np.uint8).T)
            cj.create_dataset("tumorBorder", data=np.zeros((1, 4)))


def write_cvind(path: Path, folds: list[int]) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("cvind", data=np.array([folds], dtype=np.float64))


def make_mat_dir(root: Path, n: int = 6, *, size: tuple[int, int] = (24, 20)) -> Path:
    """n slices: labels cycle 1,2,3; two slices per patient; images with a gradient so orientation is checkable."""
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(1, n + 1):
        image = (np.arange(h * w).reshape(h, w) * (i + 1)) % 3000 - 500  # int16 range, negatives included
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[2:6, 3:9] = 1
        write_figshare_mat(root / f"{i}.mat", label=(i - 1) % 3 + 1, pid=f"MR{(i + 1) // 2:04d}", image=image,
                           mask=mask)
    write_cvind(root / "cvind.mat", [(i % 3) + 1 for i in range(n)])
    return root


def test_mat_files_are_converted_to_pngs_with_labels_patients_and_folds(tmp_path):
    src = make_mat_dir(tmp_path / "src")
    assert detect_source_kind(src) == "mat"
    data = read_source(src, tmp_path / "out")
    assert data.kind == "mat" and data.classes == ["glioma", "meningioma", "pituitary"]
    by_id = {r.id: r for r in data.records}
    assert sorted(by_id, key=int) == [str(i) for i in range(1, 7)]
    first = by_id["1"]
    assert first.class_name == "meningioma" and first.label == 1 and first.patient_id == "MR0001"
    assert by_id["2"].class_name == "glioma" and by_id["3"].class_name == "pituitary"
    assert [by_id[str(i)].fold for i in range(1, 7)] == [1, 2, 3, 1, 2, 3]
    assert Path(first.path) == tmp_path / "out/images/meningioma/1.png"
    # Orientation: the PNG is the MATLAB picture (h5py's transposed view transposed back), min-max scaled.
    png = read_grayscale(first.path)
    assert png.shape == (24, 20) and (first.height, first.width) == (24, 20)
    original = (np.arange(24 * 20).reshape(24, 20) * 2) % 3000 - 500
    assert np.corrcoef(png.ravel(), original.ravel())[0, 1] > 0.999
    mask = read_grayscale(first.mask_path)
    assert mask[3, 4] == 255 and mask[0, 0] == 0 and mask.shape == (24, 20)
    assert len(first.sha256) == 64


def test_mat_without_cjdata_is_refused_and_leaves_no_pngs(tmp_path):
    src = make_mat_dir(tmp_path / "src", n=3)
    with h5py.File(src / "2.mat", "w") as f:
        f.create_dataset("something", data=np.zeros(3))
    with pytest.raises(UserError, match="cjdata"):
        read_source(src, tmp_path / "out")
    assert not (tmp_path / "out/images").exists()


def test_non_hdf5_mat_is_refused(tmp_path):
    src = make_mat_dir(tmp_path / "src", n=3)
    (src / "3.mat").write_bytes(b"MATLAB 5.0 MAT-file, not v7.3")
    with pytest.raises(UserError, match="v7.3"):
        read_source(src, tmp_path / "out")


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


def test_class_tree_with_mixed_formats_bit_depths_and_sizes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    _save(root / "Glioma/g1.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    _save(root / "Glioma/g2.tif", rng.integers(0, 65535, (16, 16), dtype=np.uint16))
    grey = rng.integers(0, 255, (24, 24), dtype=np.uint8)
    _save(root / "pituitary_tumor/p1.jpg", np.stack([grey] * 3, axis=-1))  # grey stored as RGB
    _save(root / "pituitary_tumor/p2.png", rng.integers(0, 255, (40, 32), dtype=np.uint8))
    (root / "pituitary_tumor/notes.txt").write_text("ignored")
    data = read_source(root, tmp_path / "out")
    assert data.kind == "tree" and data.classes == ["glioma", "pituitary"] and not data.has_splits
    by_id = {r.id: r for r in data.records}
    assert set(by_id) == {"g1", "g2", "p1", "p2"}
    assert (by_id["g1"].width, by_id["g1"].height) == (30, 20)
    assert (by_id["p2"].width, by_id["p2"].height) == (32, 40)
    assert by_id["p1"].label == 1 and by_id["g2"].label == 0
    assert all(r.split == "" and r.patient_id == "" for r in data.records)


def test_split_tree_masks_and_metadata_csv(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "Training_Dataset"
    for split in ("train", "val", "test"):
        for name in ("glioma", "meningioma", "pituitary_tumor"):
            i = f"{split}-{name}"
            _save(root / "images" / split / name / f"{i}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
            _save(root / "masks" / split / name / f"{i}.png", np.zeros((16, 16), dtype=np.uint8))
    (root / "metadata.csv").write_text("id,patient_id,class\ntrain-glioma,P1,glioma\nval-glioma,P2,Glioma\n")
    data = read_source(root, tmp_path / "out")
    assert data.has_splits and data.classes == ["glioma", "meningioma", "pituitary"]
    by_id = {r.id: r for r in data.records}
    assert by_id["test-pituitary_tumor"].split == "test" and by_id["val-meningioma"].split == "val"
    assert by_id["train-glioma"].patient_id == "P1" and by_id["val-glioma"].patient_id == "P2"
    assert all(Path(r.mask_path).is_file() for r in data.records)


def test_masks_folder_without_images_folder_is_neither_masks_nor_a_class(tmp_path):
    """masks/ belongs beside images/; beside class folders it would be read as masks and as a class "masks"."""
    rng = np.random.default_rng(3)
    root = tmp_path / "tree"
    for name in ("glioma", "meningioma"):
        _save(root / name / f"{name}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
        _save(root / "masks" / name / f"{name}.png", np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(UserError, match="masks/ but no images/"):
        read_source(root, tmp_path / "out")
    (root / "images").mkdir()
    for name in ("glioma", "meningioma"):
        (root / name).rename(root / "images" / name)
    data = read_source(root, tmp_path / "out")
    assert data.classes == ["glioma", "meningioma"] and all(Path(r.mask_path).is_file() for r in data.records)


def test_colour_image_corrupt_file_empty_class_and_duplicate_ids_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "tree"
    _save(root / "a/x.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    _save(root / "b/y.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    with pytest.raises(UserError, match="colour"):
        read_source(root, tmp_path / "out")
    (root / "a/x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="not a readable image"):
        read_source(root, tmp_path / "out")
    (root / "a/x.png").unlink()
    with pytest.raises(UserError, match="no images"):
        read_source(root, tmp_path / "out")
    _save(root / "a/y.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    with pytest.raises(UserError, match="duplicate image id 'y'"):
        read_source(root, tmp_path / "out")


def test_metadata_class_disagreement_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "tree"
    _save(root / "images/glioma/1.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    _save(root / "images/meningioma/2.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    (root / "patients.csv").write_text("id,patient_id,class\n1,P1,meningioma\n2,P2,meningioma\n")
    with pytest.raises(UserError, match="class disagreement for id 1"):
        read_source(root, tmp_path / "out")


@pytest.mark.parametrize("raw, norm", [
    ("pituitary_tumor", "pituitary"), ("Pituitary Tumor", "pituitary"), ("glioma-tumour", "glioma"),
    ("MENINGIOMA", "meningioma"), ("no_tumor", "no_tumor"), ("No Tumor", "no_tumor"),
])
def test_class_name_normalisation(raw, norm):
    assert normalise_class_name(raw) == norm


@pytest.mark.realdata
def test_shared_figshare_layout_reads_as_is(figshare_dir, tmp_path):
    data = read_source(figshare_dir, tmp_path / "out")
    assert len(data.records) == 3064 and data.classes == ["glioma", "meningioma", "pituitary"]
    assert len({r.patient_id for r in data.records}) == 233
    assert all(r.mask_path and r.fold >= 1 for r in data.records)
