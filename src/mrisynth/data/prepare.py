"""`mrisynth data prepare`: read a source, split it, write the manifest a user can trust.

    out = run_prepare("/data/figshare", "runs/a/data", PrepareConfig(split="patient"))

Writes `OUT/manifest.csv`, `OUT/classes.json`, `OUT/config.yaml` (resolved settings) and `OUT/prepare.json`
(source, kind, split summary), and for .mat sources `OUT/images/` and `OUT/masks/`. The manifest is written last:
a refusal leaves an earlier manifest as it was (and no output folder at all when this call created it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

from mrisynth.config import save_config
from mrisynth.data.manifest import (
    MANIFEST_NAME,
    ImageRecord,
    load_manifest,
    save_classes,
    save_manifest,
    split_summary,
)
from mrisynth.data.phantom import METADATA_NAME as PHANTOM_METADATA
from mrisynth.data.sources import detect_source_kind, read_source
from mrisynth.data.splits import assign_splits, warn_missing_classes
from mrisynth.errors import UserError
from mrisynth.files import claim_output_dir, output_kind, write_json

log = logging.getLogger(__name__)
PREPARED_KIND = "prepared-data"  # the marker kind of a prepared data folder (files.claim_output_dir)


@dataclasses.dataclass
class PrepareConfig:
    """How to turn a source into a manifest. `split`: auto | seed | patient | folds | keep | file:PATH."""

    # auto: the source's own splits when it has them, else patient-level when patient ids exist, else seed.
    split: str = "auto"
    seed: int = 42
    fractions: list[float] = dataclasses.field(default_factory=lambda: [0.7, 0.2, 0.1])  # train, val, test
    tolerance: float = 0.02  # patient/folds splits: largest allowed gap in class share, per split and class
    folds: int = 5  # folds made when the source gives none
    group_trailing_letter: bool = False  # MR024780B and MR024780E are one person
    metadata: str = ""  # CSV joined by id; "" = patients.csv or metadata.csv in the source folder, if any


def resolve_split(spec: str, *, has_splits: bool, has_patients: bool) -> str:
    """The concrete split kind for `auto`; other specs pass through."""
    if spec != "auto":
        return spec
    if has_splits:
        return "keep"
    if has_patients:
        return "patient"
    log.warning("no patient ids in the source: splitting by image (--split seed); adjacent slices of one "
                "patient may land in different splits. Add a metadata CSV with id,patient_id to avoid this")
    return "seed"


def run_prepare(source: str | os.PathLike, out_dir: str | os.PathLike, cfg: PrepareConfig) -> Path:
    """Read `source`, assign splits per `cfg`, and write the manifest folder `out_dir`; returns `out_dir`.

    `out_dir` must be new, empty, or an earlier prepared-data folder (see `files.claim_output_dir`). An earlier
    manifest there survives any refusal: it is replaced only once the new one is complete.
    """
    source, out_dir = Path(source), Path(out_dir)
    _check_source(source, out_dir)
    with claim_output_dir(out_dir, PREPARED_KIND) as out:
        staging = out / ".staging"
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
        try:
            return _prepare(source, out, staging, cfg)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _check_source(source: Path, out_dir: Path) -> None:
    """Refuse sources that are not real images ready to read, before anything is written."""
    kind = detect_source_kind(source)  # also: exists, is a folder
    if out_dir.resolve() == source.resolve() or source.resolve() in out_dir.resolve().parents:
        raise UserError(f"--out {out_dir} is inside the source folder {source}; choose a folder outside it")
    found = output_kind(source)
    if found == "synthetic" or (kind == "tree" and _holds_synthetic_manifest(source)):
        raise UserError(f"{source} is a synthetic set written by `mrisynth generator sample`; preparing it would "
                        "label its images real. Prepare the real images, and pass the set as --synthetic")
    if found == "phantom" and not (source / PHANTOM_METADATA).is_file():
        raise UserError(f"{source} is an unfinished phantom (no {PHANTOM_METADATA}); rerun `mrisynth data phantom "
                        f"--out {source}` first")


def _holds_synthetic_manifest(source: Path) -> bool:
    if not (source / MANIFEST_NAME).is_file():
        return False
    try:
        return any(r.source == "synthetic" for r in load_manifest(source))
    except UserError:
        return False  # not a mrisynth manifest: a user's own file, read as a plain image tree


def _prepare(source: Path, out_dir: Path, staging: Path, cfg: PrepareConfig) -> Path:
    # .mat slices are converted into a staging folder first: the old images stay until the new set is complete.
    data = read_source(source, staging, metadata=cfg.metadata or None)
    if len(data.classes) < 2:
        raise UserError(f"{source} holds one class ({data.classes[0]}); a classifier needs at least two")
    _check_utf8_names(data.records)
    spec = resolve_split(_split_file_beside_source(cfg.split, source), has_splits=data.has_splits,
                         has_patients=all(r.patient_id for r in data.records))
    records = assign_splits(
        data.records, spec, seed=cfg.seed, fractions=cfg.fractions, tolerance=cfg.tolerance,
        n_folds=cfg.folds, group_trailing_letter=cfg.group_trailing_letter,
    )
    warn_missing_classes(records)
    # Everything is checked: from here on only writing is left. The old manifest goes first, so that a crash
    # below leaves no manifest that points at replaced images.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    if data.kind == "mat":
        records = _move_staged(records, staging, out_dir)
    summary = split_summary(records)
    save_config(dataclasses.replace(cfg, split=spec), out_dir / "config.yaml")  # `auto` saved as what it chose
    write_json(out_dir / "prepare.json", {
        "source": str(source.resolve()), "kind": data.kind, "split": spec, "images": len(records),
        "patients": len({r.patient_id for r in records if r.patient_id}), "classes": data.classes,
        "summary": summary,
    })
    save_classes(data.classes, out_dir)
    save_manifest(records, out_dir / MANIFEST_NAME)  # last: its presence means the folder is complete
    log.info("prepared %d images (%s split) in %s", len(records), spec, out_dir)
    return out_dir


def _check_utf8_names(records: list[ImageRecord]) -> None:
    """File names that are not UTF-8 cannot be written into the manifest: say which, before writing anything."""
    for rec in records:
        for text in (rec.path, rec.mask_path, rec.class_name):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise UserError(f"the file name {shown} is not valid UTF-8; rename it (e.g. with convmv) and "
                                "rerun") from None


def _move_staged(records: list[ImageRecord], staging: Path, out_dir: Path) -> list[ImageRecord]:
    """Swap the staged images/ and masks/ into `out_dir` and point the records there."""
    for name in ("images", "masks"):
        target, old = out_dir / name, out_dir / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        if (staging / name).exists():
            os.replace(staging / name, target)
        shutil.rmtree(old, ignore_errors=True)
    prefix, moved = str(staging), str(out_dir)

    def moved_path(path: str) -> str:
        return moved + path[len(prefix):] if path.startswith(prefix) else path

    return [dataclasses.replace(r, path=moved_path(r.path), mask_path=moved_path(r.mask_path)) for r in records]


def format_summary(summary: dict[str, dict]) -> str:
    """A split summary (from `manifest.split_summary`) as a small text table."""
    classes = sorted({c for row in summary.values() for c in row["classes"]})
    header = ["split", "images", "patients", *classes]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for split, row in summary.items():
        cells = [split, row["images"], row["patients"], *(row["classes"].get(c, 0) for c in classes)]
        lines.append("  ".join(f"{c!s:>10}" for c in cells))
    return "\n".join(lines)


def _split_file_beside_source(split: str, source: Path) -> str:
    """`file:NAME` that is not found as given is looked up in the source folder (e.g. file:seed_split.csv)."""
    if not split.startswith("file:"):
        return split
    path = Path(split[len("file:"):])
    if not path.is_absolute() and not path.is_file() and (source / path).is_file():
        return f"file:{source / path}"
    return split
