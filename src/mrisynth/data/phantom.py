"""The built-in digital phantom: labelled, MRI-like axial slices with patients and tumour masks, no download.

    run_phantom(PhantomConfig(patients=60), "DIR")       (CLI: mrisynth data phantom --out DIR, in data/cli.py)

writes the layout of the Figshare copy, which `mrisynth data prepare DIR` reads unchanged:

    DIR/images/<class>/<id>.png   one-channel 8-bit slice
    DIR/masks/<class>/<id>.png    0/255 tumour mask, same id
    DIR/metadata.csv              id, patient_id, class, slice, level
    DIR/config.yaml               the resolved PhantomConfig

Each patient has one class and `slices_per_patient` slices at different levels through the tumour. Every slice
is drawn from its own seed (derived from the run seed, the patient and the slice), so the output is identical
byte for byte for a seed whatever the number of worker processes. Anatomy: `phantom_anatomy`; tumours:
`phantom_lesions`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mrisynth.config import save_config
from mrisynth.data.images import save_grayscale_png
from mrisynth.data.phantom_anatomy import (
    apply_nuisances,
    build_head_maps,
    render_anatomy,
    sample_head,
    to_uint8_image,
)
from mrisynth.data.phantom_lesions import CLASSES, lesion_distance, render_lesion, sample_lesion, slice_levels
from mrisynth.data.phantom_site import apply_site, get_site, site_head
from mrisynth.errors import UserError
from mrisynth.files import atomic_path, claim_output_dir, write_text
from mrisynth.seeding import derive_seed

log = logging.getLogger(__name__)
METADATA_NAME = "metadata.csv"
METADATA_COLUMNS = ("id", "patient_id", "class", "slice", "level")
MIN_SIZE = 16
# Intensity mapped to grey level 255: chosen so that the mean head intensity matches the real data (~75).
WHITE_LEVEL = 1.38


@dataclasses.dataclass
class PhantomConfig:
    """What to generate. Class shares are normalised; each patient gets one class."""

    patients: int = 60
    slices_per_patient: int = 8
    size: int = 256
    seed: int = 0
    difficulty: float = 0.5  # 0 = obvious lesions, 1 = small, faint, atypical ones
    class_shares: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"glioma": 1.0, "meningioma": 1.0, "pituitary": 1.0}
    )
    workers: int = 0  # processes; 0 = up to 2 (the output does not depend on it)
    site: str = "A"  # scanner (data/phantom_site.py): A = the original phantom, B = another hospital's scanner


def check_config(cfg: PhantomConfig) -> None:
    """Raise UserError for settings that cannot give a sensible phantom."""
    if cfg.patients < 1:
        raise UserError(f"--patients must be at least 1 (got {cfg.patients})")
    if cfg.slices_per_patient < 1:
        raise UserError(f"--slices-per-patient must be at least 1 (got {cfg.slices_per_patient})")
    if cfg.size < MIN_SIZE:
        raise UserError(f"--size must be at least {MIN_SIZE} pixels (got {cfg.size})")
    if not 0.0 <= cfg.difficulty <= 1.0:
        raise UserError(f"--difficulty must be between 0 and 1 (got {cfg.difficulty})")
    if cfg.workers < 0:
        raise UserError(f"workers must be 0 (automatic) or more (got {cfg.workers})")
    get_site(cfg.site)
    unknown = sorted(set(cfg.class_shares) - set(CLASSES))
    if unknown:
        raise UserError(f"unknown class '{unknown[0]}' in class_shares; use {', '.join(CLASSES)}")
    shares = [cfg.class_shares.get(c, 0.0) for c in CLASSES]
    if min(shares) < 0 or sum(shares) <= 0:
        raise UserError("class_shares must be non-negative and not all zero")


def assign_classes(cfg: PhantomConfig) -> list[str]:
    """One class per patient: counts by largest remainder of the shares, order shuffled by the seed."""
    shares = np.array([cfg.class_shares.get(c, 0.0) for c in CLASSES], dtype=float)
    exact = shares / shares.sum() * cfg.patients
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: cfg.patients - counts.sum()]:
        counts[i] += 1
    classes = [c for c, n in zip(CLASSES, counts) for _ in range(n)]
    np.random.default_rng(derive_seed("phantom-classes", cfg.seed)).shuffle(classes)
    return classes


def patient_id(index: int) -> str:
    return f"P{index + 1:04d}"


def render_patient(cfg: PhantomConfig, index: int, kind: str) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """All slices of one patient: [(id, level, image uint8 (S, S), mask uint8 (S, S) 0/255)]."""
    rng = np.random.default_rng(derive_seed("phantom-patient", cfg.seed, index))
    pixel = 2.0 / cfg.size
    head = sample_head(rng, difficulty=cfg.difficulty)
    lesion = sample_lesion(kind, head, rng, difficulty=cfg.difficulty)
    # In small images keep the lesion at least 3 pixels in radius, so that every slice shows it.
    lesion = dataclasses.replace(lesion, radius=max(lesion.radius, 3 * pixel))
    levels = slice_levels(lesion, cfg.slices_per_patient, rng, difficulty=cfg.difficulty, pixel=pixel)
    site = get_site(cfg.site)
    maps = build_head_maps(cfg.size, site_head(head, site))  # a site changes the framing, not the anatomy
    dist = lesion_distance(maps, lesion)
    out = []
    for s, z in enumerate(levels):
        slice_rng = np.random.default_rng(derive_seed("phantom-slice", cfg.seed, index, s))
        anat = render_anatomy(maps, float(z), head, pixel=pixel)
        img, mask = render_lesion(anat, maps, dist, float(z), lesion, pixel=pixel)
        img = apply_nuisances(img, slice_rng, difficulty=cfg.difficulty)
        # Its own stream: the anatomy's draws above are the same at every site.
        img = apply_site(img, site, np.random.default_rng(derive_seed("phantom-site", site.name, cfg.seed, index, s)))
        out.append((f"{patient_id(index)}-{s:02d}", float(z), to_uint8_image(img, white_level=WHITE_LEVEL),
                    mask.astype(np.uint8) * 255))
    return out


def _render_job(job: tuple[PhantomConfig, int, str, Path, Path]) -> list[tuple[str, str, str, str, str]]:
    """Render one patient and save its PNGs under `images` and `masks` (in the worker: encoding runs in parallel
    too)."""
    cfg, index, kind, images, masks = job
    rows = []
    for s, (image_id, level, img, mask) in enumerate(render_patient(cfg, index, kind)):
        save_grayscale_png(img, images / kind / f"{image_id}.png")
        save_grayscale_png(mask, masks / kind / f"{image_id}.png")
        rows.append((image_id, patient_id(index), kind, f"{s:02d}", f"{level:.4f}"))
    return rows


def run_phantom(cfg: PhantomConfig, out_dir: str | os.PathLike) -> Path:
    """Write a phantom data set to `out_dir` (replacing an earlier phantom there) and return its path."""
    check_config(cfg)
    out_dir = Path(out_dir)
    classes = assign_classes(cfg)
    workers = cfg.workers or min(2, os.cpu_count() or 1)
    rows = []
    # A folder that holds anything but an earlier phantom is refused before anything is written.
    with claim_output_dir(out_dir, "phantom", legacy=_is_earlier_phantom) as out:
        # metadata.csv marks a complete phantom: it goes first and comes back last, so a crash never leaves a
        # half phantom that looks whole. images/ and masks/ are built under temporary names and swapped in.
        (out / METADATA_NAME).unlink(missing_ok=True)
        with atomic_path(out / "images", suffix="") as images, atomic_path(out / "masks", suffix="") as masks:
            # Folders only for classes that get patients: `data prepare` refuses an empty class folder.
            for kind in sorted(set(classes)):
                (images / kind).mkdir(parents=True)
                (masks / kind).mkdir(parents=True)
            jobs = [(cfg, i, kind, images, masks) for i, kind in enumerate(classes)]
            with ProcessPoolExecutor(workers) if workers > 1 else _InlineExecutor() as pool:
                results = pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
                for patient_rows in tqdm(results, total=len(jobs), unit="patient", desc="phantom", leave=False):
                    rows.extend(patient_rows)
        save_config(cfg, out / "config.yaml")
        _write_metadata(rows, out / METADATA_NAME)
    log.info("phantom: %d patients, %d slices at %d px in %s", cfg.patients, len(rows), cfg.size, out_dir)
    return out_dir


def _is_earlier_phantom(path: Path) -> bool:
    """A phantom written before output markers existed: its metadata header, config and image folders."""
    meta = path / METADATA_NAME
    if not (meta.is_file() and (path / "config.yaml").is_file() and (path / "images").is_dir()):
        return False
    with open(meta, encoding="utf-8", errors="replace") as f:
        return f.readline().strip() == ",".join(METADATA_COLUMNS)


def _write_metadata(rows: list[tuple], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


class _InlineExecutor:
    """The executor interface without processes (one worker: simpler tracebacks, no start-up cost)."""

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items, chunksize: int = 1):
        return map(fn, items)
