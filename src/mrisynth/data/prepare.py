"""`mrisynth data prepare`: read a source, split it, write the manifest a user can trust.

    out = run_prepare("/data/figshare", "runs/a/data", PrepareConfig(split="patient"))

Writes `OUT/manifest.csv`, `OUT/classes.json`, `OUT/config.yaml` (resolved settings) and `OUT/prepare.json`
(source, kind, split summary). The manifest is written last: a failure leaves no manifest behind (and no
output folder at all when this call created it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

from mrisynth.config import save_config
from mrisynth.data.manifest import CLASSES_NAME, MANIFEST_NAME, save_classes, save_manifest, split_summary
from mrisynth.data.sources import detect_source_kind, read_source
from mrisynth.data.splits import assign_splits
from mrisynth.errors import UserError
from mrisynth.files import write_json

log = logging.getLogger(__name__)


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
    """Read `source`, assign splits per `cfg`, and write the manifest folder `out_dir`; returns `out_dir`."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        return _prepare(Path(source), out_dir, cfg)
    except BaseException:
        if created and out_dir.is_dir():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _prepare(source: Path, out_dir: Path, cfg: PrepareConfig) -> Path:
    if out_dir.resolve() == source.resolve() or source.resolve() in out_dir.resolve().parents:
        raise UserError(f"--out {out_dir} is inside the source folder {source}; choose a folder outside it")
    if detect_source_kind(source) == "mat" and not (out_dir / "prepare.json").is_file():
        # .mat images are converted into OUT/images and OUT/masks, replacing those folders: never a user's own.
        taken = [out_dir / d for d in ("images", "masks") if (out_dir / d).exists()]
        if taken:
            raise UserError(f"{taken[0]} exists and was not written by `mrisynth data prepare`; choose an empty --out")
    # A stale manifest from an earlier run must not survive a failed rerun.
    for name in (MANIFEST_NAME, CLASSES_NAME):
        (out_dir / name).unlink(missing_ok=True)
    data = read_source(source, out_dir, metadata=cfg.metadata or None)
    if len(data.classes) < 2:
        raise UserError(f"{source} holds one class ({data.classes[0]}); a classifier needs at least two")
    spec = resolve_split(_split_file_beside_source(cfg.split, source), has_splits=data.has_splits,
                         has_patients=all(r.patient_id for r in data.records))
    records = assign_splits(
        data.records, spec, seed=cfg.seed, fractions=cfg.fractions, tolerance=cfg.tolerance,
        n_folds=cfg.folds, group_trailing_letter=cfg.group_trailing_letter,
    )
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
