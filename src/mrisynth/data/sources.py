"""Readers: turn what the user has (Figshare .mat files, or folders of images) into manifest rows.

Two kinds of source are recognised by `read_source`:

- **mat**: MATLAB v7.3 files (HDF5) each holding a group `cjdata` with `label` (1 meningioma, 2 glioma,
  3 pituitary), `PID` (uint16 characters), `image` (int16), `tumorMask`; plus `cvind.mat` (patient-wise folds)
  when present. PIL cannot read them, so each is converted to an 8-bit PNG (min-max) under
  `OUT/images/<class>/<id>.png` (mask under `OUT/masks/<class>/<id>.png`) and the manifest points there.
- **tree**: image files in `<class>/*` or `<split>/<class>/*`, optionally under `images/` with a `masks/`
  tree beside it (same ids), and an optional metadata CSV (id, patient_id, fold, split, class) joined by id.
  `patients.csv` or `metadata.csv` in the source folder is picked up automatically.

Image ids are file stems; they must be unique across the whole source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mrisynth.data.images import IMAGE_SUFFIXES, read_grayscale, save_grayscale_png, to_uint8
from mrisynth.data.manifest import ImageRecord, read_keyed_csv
from mrisynth.errors import UserError
from mrisynth.files import atomic_path, sha256_file

log = logging.getLogger(__name__)

FIGSHARE_LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}
METADATA_NAMES = ("patients.csv", "metadata.csv")
# Folder names that mean a split rather than a class.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


@dataclasses.dataclass
class SourceData:
    """What a reader found: rows (labels follow `classes`, sorted) and where they came from."""

    records: list[ImageRecord]
    classes: list[str]
    kind: str  # "mat" | "tree"
    has_splits: bool = False  # the source itself assigned train/val/test
    has_folds: bool = False  # the source itself assigned patient-wise folds


def normalise_class_name(name: str) -> str:
    """`Pituitary Tumor`, `pituitary-tumor`, `pituitary_tumor` -> `pituitary`; `no_tumor` stays."""
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    for suffix in ("_tumor", "_tumour"):
        if norm.endswith(suffix) and norm[: -len(suffix)] not in ("", "no"):
            norm = norm[: -len(suffix)]
    return norm


def normalise_split_name(name: str) -> str | None:
    """`Training` -> `train`, `validation` -> `val`; None when the name is not a split."""
    return SPLIT_ALIASES.get(name.strip().lower())


def detect_source_kind(source: str | os.PathLike) -> str:
    """`mat` when the folder holds .mat files (anywhere below it), else `tree`."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"source {source} does not exist; give a folder of .mat files or of class folders")
    if not source.is_dir():
        raise UserError(f"source {source} is not a folder; give a folder of .mat files or of class folders")
    return "mat" if any(_mat_files(source, include_cvind=False)) else "tree"


def read_source(
    source: str | os.PathLike, out_dir: str | os.PathLike, *, metadata: str | os.PathLike | None = None
) -> SourceData:
    """Read any supported source; .mat images are converted into `out_dir` first."""
    kind = detect_source_kind(source)
    if kind == "mat":
        data = read_mat_dir(source, out_dir)
    else:
        data = read_image_tree(source)
    meta_path = Path(metadata) if metadata else _find_metadata(Path(source))
    if meta_path is not None:
        join_metadata(data, meta_path)
    return data


# ----------------------------------------------------------------------------------------------- mat files

def _mat_files(root: Path, *, include_cvind: bool = True) -> Iterator[Path]:
    for path in sorted(root.rglob("*.mat")):
        if path.name.startswith("."):
            continue
        if path.name.lower() == "cvind.mat" and not include_cvind:
            continue
        yield path


def _mat_sort_key(path: Path) -> tuple:
    # 1.mat, 2.mat, ..., 10.mat in numeric order (ids are stems, usually numbers)
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def read_mat_dir(source: str | os.PathLike, out_dir: str | os.PathLike) -> SourceData:
    """Convert Figshare-style v7.3 .mat files to PNGs under `out_dir` and return their rows.

    The PNG folders are written under temporary names and renamed when every file converted, so a bad
    file leaves nothing behind.
    """
    source, out_dir = Path(source), Path(out_dir)
    files = sorted((p for p in _mat_files(source) if p.name.lower() != "cvind.mat"), key=_mat_sort_key)
    _refuse_duplicate_stems(files)
    cvind = next((p for p in _mat_files(source) if p.name.lower() == "cvind.mat"), None)
    folds = read_cvind(cvind, len(files)) if cvind is not None else None
    with contextlib.ExitStack() as stack:
        tmp_images = stack.enter_context(atomic_path(out_dir / "images", suffix=""))
        tmp_masks = stack.enter_context(atomic_path(out_dir / "masks", suffix=""))

        def convert_one(path: Path) -> ImageRecord:
            cj = read_mat_slice(path)
            name, png = cj["class_name"], f"{path.stem}.png"
            for tmp in (tmp_images, tmp_masks):
                (tmp / name).mkdir(parents=True, exist_ok=True)
            save_grayscale_png(to_uint8(cj["image"]), tmp_images / name / png)
            mask_path = ""
            if cj["mask"] is not None:
                save_grayscale_png((cj["mask"] > 0).astype(np.uint8) * 255, tmp_masks / name / png)
                mask_path = str(out_dir / "masks" / name / png)
            fold = -1
            if folds is not None and path.stem.isdigit() and 1 <= int(path.stem) <= len(folds):
                fold = int(folds[int(path.stem) - 1])
            height, width = cj["image"].shape
            return ImageRecord(
                id=path.stem, path=str(out_dir / "images" / name / png), class_name=name, label=-1,
                patient_id=cj["patient_id"], fold=fold, width=width, height=height,
                sha256=sha256_file(tmp_images / name / png), mask_path=mask_path,
            )

        # Threads: PNG compression (zlib) releases the GIL; h5py reads serialise on its own lock.
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
            records = list(tqdm(pool.map(convert_one, files), total=len(files), desc="convert .mat", leave=False))
    if not records:
        raise UserError(f"no .mat image files in {source}")
    log.info("converted %d .mat files from %s", len(records), source)
    return _finish(records, "mat", has_folds=folds is not None)


def read_mat_slice(path: Path) -> dict:
    """One v7.3 file: {class_name, patient_id, image (H, W) int16 as stored by MATLAB, mask (H, W) or None}."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(
            f"{path} is not a MATLAB v7.3 (HDF5) file; re-save it with `save -v7.3` or remove it"
        ) from exc
    with handle as f:
        if "cjdata" not in f:
            raise UserError(f"{path} has no 'cjdata' group; expected the Figshare brain tumour layout")
        cj = f["cjdata"]
        missing = [k for k in ("label", "PID", "image") if k not in cj]
        if missing:
            raise UserError(f"{path}: cjdata lacks {', '.join(missing)}")
        label = int(np.asarray(cj["label"]).ravel()[0])
        if label not in FIGSHARE_LABELS:
            raise UserError(f"{path}: label {label} is not one of 1, 2, 3 (meningioma, glioma, pituitary)")
        # PID is a MATLAB char array: uint16 code points.
        patient_id = "".join(chr(int(c)) for c in np.asarray(cj["PID"]).ravel() if int(c) != 0).strip()
        # h5py sees MATLAB's column-major arrays transposed; .T gives the picture as MATLAB shows it.
        image = np.asarray(cj["image"]).T
        mask = np.asarray(cj["tumorMask"]).T if "tumorMask" in cj else None
    if image.ndim != 2 or image.size == 0:
        raise UserError(f"{path}: cjdata/image has shape {image.shape}, expected a 2-D slice")
    return {"class_name": FIGSHARE_LABELS[label], "patient_id": patient_id, "image": image, "mask": mask}


def read_cvind(path: Path, expected: int) -> np.ndarray:
    """Fold number (1..k) of each image, in file-number order, from Figshare's cvind.mat."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            key = "cvind" if "cvind" in f else next(iter(f.keys()), None)
            if key is None:
                raise UserError(f"{path} is empty; remove it or replace it with the original cvind.mat")
            folds = np.asarray(f[key]).ravel().astype(np.int64)
    except OSError as exc:
        raise UserError(f"{path} is not a MATLAB v7.3 (HDF5) file; remove it or re-download it") from exc
    if len(folds) != expected:
        log.warning("%s lists %d images but %d .mat files were found", path, len(folds), expected)
    return folds


# ----------------------------------------------------------------------------------------------- image trees

def read_image_tree(source: str | os.PathLike) -> SourceData:
    """Read `<class>/*` or `<split>/<class>/*` (optionally under `images/`, masks under `masks/`)."""
    source = Path(source)
    image_root = source / "images" if (source / "images").is_dir() else source
    # masks/ is read only beside images/. Without images/ the top folders are the classes, so masks/ would be
    # both the mask tree and a class called "masks": refuse rather than guess which was meant.
    if image_root == source and (source / "masks").is_dir():
        raise UserError(f"{source} has masks/ but no images/ folder: move the class folders into {source / 'images'} "
                        "(masks/ stays beside it), or rename masks/ if it is a class")
    mask_root = source / "masks" if (source / "masks").is_dir() else None
    entries = list(_tree_entries(image_root))  # (split, class, path)
    if not entries:
        raise UserError(
            f"no class folders with images in {image_root}; expected <class>/<image> or <split>/<class>/<image>"
        )
    _refuse_duplicate_stems([p for _, _, p in entries])
    masks = _index_masks(mask_root) if mask_root is not None else {}

    def read_one(entry: tuple[str, str, Path]) -> ImageRecord:
        split, name, path = entry
        arr = read_grayscale(path)  # decodes the whole file: corrupt or colour images fail here, not later
        return ImageRecord(
            id=path.stem, path=str(path.resolve()), class_name=name, label=-1, split=split,
            width=int(arr.shape[1]), height=int(arr.shape[0]), sha256=sha256_file(path),
            mask_path=str(masks[path.stem].resolve()) if path.stem in masks else "",
        )

    # Threads suffice: PIL and hashlib release the GIL.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        records = list(tqdm(pool.map(read_one, entries), total=len(entries), desc="read images", leave=False))
    if masks and not all(r.mask_path for r in records):
        log.warning("%d of %d images have no mask in %s", sum(not r.mask_path for r in records), len(records),
                    mask_root)
    return _finish(records, "tree", has_splits=any(r.split for r in records))


def _tree_entries(root: Path) -> Iterator[tuple[str, str, Path]]:
    """Yield (split or "", normalised class, file) for every image file in the tree."""
    for top in _subdirs(root):
        split = normalise_split_name(top.name)
        if split is not None:
            class_dirs = [(split, d) for d in _subdirs(top)]
            if not class_dirs:
                raise UserError(f"split folder {top} has no class folders inside")
        else:
            class_dirs = [("", top)]
        for split_name, class_dir in class_dirs:
            if not os.access(class_dir, os.R_OK | os.X_OK):  # rglob would see an unreadable folder as empty
                raise UserError(f"cannot read class folder {class_dir}: permission denied; make it readable "
                                f"(chmod -R u+rX {class_dir}) or move it out of the source")
            files = [p for p in sorted(class_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")]
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped = len(files) - len(images)
            if skipped:
                log.warning("skipped %d non-image file(s) in %s", skipped, class_dir)
            if not images:
                raise UserError(
                    f"class folder {class_dir} has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
                )
            name = normalise_class_name(class_dir.name)
            for path in images:
                yield split_name, name, path


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _index_masks(mask_root: Path) -> dict[str, Path]:
    return {
        p.stem: p for p in sorted(mask_root.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    }


def _refuse_duplicate_stems(paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise UserError(
                f"duplicate image id '{path.stem}': {seen[path.stem]} and {path}; ids are file names "
                "without extension and must be unique: rename one"
            )
        seen[path.stem] = path


# ----------------------------------------------------------------------------------------------- metadata CSV

def _find_metadata(source: Path) -> Path | None:
    return next((source / n for n in METADATA_NAMES if (source / n).is_file()), None)


def join_metadata(data: SourceData, path: str | os.PathLike) -> None:
    """Fill patient_id, fold and split from a CSV keyed by `id`; a `class` column must agree with the folders."""
    path = Path(path)
    # UTF-8, complete rows and unique ids are checked there: a repeated id must not silently win.
    rows = read_keyed_csv(path, required=("id",), what="metadata CSV")
    matched = 0
    for rec in data.records:
        row = rows.get(rec.id)
        if row is None:
            continue
        matched += 1
        if row.get("patient_id", "").strip():
            rec.patient_id = row["patient_id"].strip()
        if row.get("fold", "").strip():
            try:
                rec.fold = int(row["fold"])
            except ValueError as exc:
                raise UserError(f"{path}: fold '{row['fold']}' of id {rec.id} is not an integer") from exc
        if row.get("split", "").strip():
            split = normalise_split_name(row["split"])
            if split is None:
                raise UserError(f"{path}: split '{row['split']}' of id {rec.id} is not train, val or test")
            rec.split = split
        if row.get("class", "").strip() and normalise_class_name(row["class"]) != rec.class_name:
            raise UserError(
                f"class disagreement for id {rec.id}: {path.name} says '{row['class']}', its folder says "
                f"'{rec.class_name}'; fix the CSV or move the file"
            )
    if matched == 0:
        raise UserError(f"metadata CSV {path} shares no id with the images; ids are file names without extension")
    if matched < len(data.records):
        log.warning("%d of %d images have no row in %s", len(data.records) - matched, len(data.records), path)
    data.has_splits = data.has_splits or any(r.split for r in data.records)
    data.has_folds = data.has_folds or any(r.fold >= 0 for r in data.records)
    log.info("joined %s: %d of %d images matched", path, matched, len(data.records))


def _finish(records: list[ImageRecord], kind: str, **flags: bool) -> SourceData:
    """Sort classes by name and set labels to their index."""
    classes = sorted({r.class_name for r in records})
    index = {name: i for i, name in enumerate(classes)}
    for rec in records:
        rec.label = index[rec.class_name]
    return SourceData(records=records, classes=classes, kind=kind, **flags)
