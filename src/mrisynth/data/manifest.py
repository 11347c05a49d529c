"""The manifest: one row per image, the contract between every step.

`DIR/manifest.csv` columns (in this order):

    id, path, class, label, patient_id, split, fold, width, height, sha256, mask_path, source,
    prompt, seed, steps, guidance, strength, source_image_id, generator_sha256

Real images leave the provenance columns (prompt .. generator_sha256) empty; synthetic images fill them.
`path` and `mask_path` are stored relative to the manifest's folder when inside it, absolute otherwise,
and are returned absolute by `load_manifest`. `DIR/classes.json` fixes the class order (label = index).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mrisynth.errors import UserError
from mrisynth.files import read_json, write_json, write_text

MANIFEST_NAME = "manifest.csv"
CLASSES_NAME = "classes.json"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class ImageRecord:
    """One image. `class_name` is the CSV column `class`."""

    id: str
    path: str
    class_name: str
    label: int
    patient_id: str = ""
    split: str = ""  # train | val | test | "" (unassigned)
    fold: int = -1  # patient-wise CV fold, -1 when none
    width: int = 0
    height: int = 0
    sha256: str = ""
    mask_path: str = ""
    source: str = "real"  # real | synthetic
    # provenance, synthetic images only
    prompt: str = ""
    seed: int = -1
    steps: int = -1
    guidance: float | None = None
    strength: float | None = None
    source_image_id: str = ""
    generator_sha256: str = ""


COLUMNS = tuple("class" if f.name == "class_name" else f.name for f in dataclasses.fields(ImageRecord))
_REQUIRED = ("id", "path", "class", "label")
_TYPES = {f.name: f.type for f in dataclasses.fields(ImageRecord)}


def save_manifest(records: Sequence[ImageRecord], path: str | os.PathLike) -> Path:
    """Write records as CSV atomically; duplicate ids are refused."""
    path = Path(path)
    duplicates = [k for k, n in Counter(r.id for r in records).items() if n > 1]
    if duplicates:
        raise UserError(f"duplicate image id '{duplicates[0]}' ({len(duplicates)} duplicated); ids must be unique")
    root = path.parent.resolve()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for rec in records:
        row = dataclasses.asdict(rec)
        row["path"] = _relative_to(row["path"], root)
        row["mask_path"] = _relative_to(row["mask_path"], root) if row["mask_path"] else ""
        writer.writerow(["" if row[_field(c)] is None else row[_field(c)] for c in COLUMNS])
    return write_text(path, buffer.getvalue())


def load_manifest(path: str | os.PathLike) -> list[ImageRecord]:
    """Read a manifest (a file, or a folder holding manifest.csv); paths come back absolute."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"no manifest at {path}; run `mrisynth data prepare SOURCE --out DIR` first")
    root = path.parent.resolve()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} is not a mrisynth manifest: missing column(s) {', '.join(missing)}")
        records = []
        for line, row in enumerate(reader, start=2):
            try:
                records.append(_record_from_row(row, root))
            except ValueError as exc:
                raise UserError(f"{path}, line {line}: {exc}") from exc
            if records[-1].split not in (*SPLITS, ""):
                # An unknown split would silently drop the row from training and evaluation.
                raise UserError(f"{path}, line {line}: split '{records[-1].split}' is not one of "
                                f"{', '.join(SPLITS)} (or empty); fix the row or prepare the data again")
    return records


def check_labels(records: Sequence[ImageRecord], classes: Sequence[str], *, where: str) -> None:
    """A UserError when a row's label is not its class's index in `classes` (a hand-edited manifest)."""
    for rec in records:
        if not 0 <= rec.label < len(classes) or classes[rec.label] != rec.class_name:
            raise UserError(f"{where}: image {rec.id} has label {rec.label} and class '{rec.class_name}', but "
                            f"classes.json lists {list(classes)}; prepare the data again")


def require_source(records: Sequence[ImageRecord], source: str, *, where: str) -> None:
    """A UserError unless every row is `source` ("real" or "synthetic"): the two must never be mixed up."""
    other = [r for r in records if r.source != source]
    if other:
        hint = ("pass a folder written by `mrisynth generator sample`" if source == "synthetic"
                else "pass a folder written by `mrisynth data prepare` from real images")
        raise UserError(f"{where} is not {source} data: {len(other)} of {len(records)} rows are "
                        f"'{other[0].source}' (e.g. {other[0].id}); {hint}")


def read_keyed_csv(path: str | os.PathLike, *, required: Sequence[str], what: str) -> dict[str, dict[str, str]]:
    """Rows of a user's CSV keyed by the stripped `id` column, checked: UTF-8, every row complete, ids unique."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                        f"{exc.start}); save it as UTF-8 and rerun") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{what} {path} needs the column(s) {', '.join(required)}; missing {', '.join(missing)}")
    rows: dict[str, dict[str, str]] = {}
    for row in reader:
        line = reader.line_num
        if None in row or None in row.values():  # more or fewer fields than the header
            raise UserError(f"{what} {path}, line {line}: {len(reader.fieldnames)} fields expected (the header's); "
                            "fix the row")
        key = row["id"].strip()
        if key in rows:
            raise UserError(f"{what} {path}, line {line}: id '{key}' is listed twice; each image once, please")
        rows[key] = {k: v.strip() for k, v in row.items()}
    return rows


def _record_from_row(row: dict, root: Path) -> ImageRecord:
    values = {}
    for column in COLUMNS:
        raw = row.get(column)
        name = _field(column)
        if raw is None or raw == "":
            continue
        kind = _TYPES[name]
        if kind == "int":
            values[name] = int(raw)
        elif kind.startswith("float"):
            values[name] = float(raw)
        else:
            values[name] = raw
    for key in ("path", "mask_path"):
        if values.get(key) and not os.path.isabs(values[key]):
            values[key] = str(root / values[key])
    return ImageRecord(**values)


def _field(column: str) -> str:
    return "class_name" if column == "class" else column


def _relative_to(path: str, root: Path) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def save_classes(classes: Sequence[str], directory: str | os.PathLike) -> Path:
    """Write classes.json: the class names in label order."""
    return write_json(Path(directory) / CLASSES_NAME, {"classes": list(classes)})


def load_classes(directory: str | os.PathLike) -> list[str]:
    """Class names in label order, from classes.json beside a manifest."""
    directory = Path(directory)
    if directory.is_file():
        directory = directory.parent
    data = read_json(directory / CLASSES_NAME)
    return list(data["classes"])


def select(records: Iterable[ImageRecord], *, split: str | None = None, class_name: str | None = None) -> list[ImageRecord]:
    """Records of one split and/or class."""
    return [
        r for r in records
        if (split is None or r.split == split) and (class_name is None or r.class_name == class_name)
    ]


def class_counts(records: Iterable[ImageRecord]) -> dict[str, int]:
    """Images per class, sorted by class name."""
    return dict(sorted(Counter(r.class_name for r in records).items()))


def split_summary(records: Sequence[ImageRecord]) -> dict[str, dict]:
    """Per split: image count, class counts and patient count (for printing and reports)."""
    out = {}
    for split in sorted({r.split for r in records}, key=lambda s: (SPLITS + ("",)).index(s) if s in SPLITS else 9):
        rows = select(records, split=split)
        out[split or "unassigned"] = {
            "images": len(rows),
            "classes": class_counts(rows),
            "patients": len({r.patient_id for r in rows if r.patient_id}),
        }
    return out
