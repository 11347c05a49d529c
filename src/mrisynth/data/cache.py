"""The packed cache: every image of a manifest as uint8 at one square size, in one memory-mapped .npy.

This is what the trainers read: 3,064 slices at 256 px are 200 MB, loaded in milliseconds and small enough to
live on the GPU. Layout, under the manifest's folder:

    cache/<fit>-<size>/images.npy   (N, size, size) uint8, rows in manifest order
    cache/<fit>-<size>/meta.json    size, fit, ids, and the manifest's SHA-256 (a stale cache is rebuilt)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from mrisynth.data.images import Fit, fit_square, read_grayscale
from mrisynth.data.manifest import MANIFEST_NAME, ImageRecord, load_classes, load_manifest
from mrisynth.errors import UserError
from mrisynth.files import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageCache:
    """Images of one manifest at one size, with the manifest rows they came from."""

    images: np.ndarray  # (N, S, S) uint8, memory-mapped
    records: list[ImageRecord]
    classes: list[str]

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of one split (all rows when None)."""
        return np.array([i for i, r in enumerate(self.records) if split is None or r.split == split], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)


def cache_dir(data_dir: str | os.PathLike, size: int, fit: Fit = "resize") -> Path:
    """Where the cache of a manifest folder at `size` lives."""
    return Path(data_dir) / "cache" / f"{fit}-{size}"


def build_cache(data_dir: str | os.PathLike, size: int, *, fit: Fit = "resize", workers: int | None = None) -> Path:
    """Decode, fit and pack every image of `data_dir/manifest.csv`; returns the cache folder."""
    data_dir = Path(data_dir)
    records = load_manifest(data_dir)
    if not records:
        raise UserError(f"{data_dir / MANIFEST_NAME} has no rows; nothing to cache")
    out = cache_dir(data_dir, size, fit)
    out.parent.mkdir(parents=True, exist_ok=True)
    workers = workers or min(8, os.cpu_count() or 1)
    with atomic_path(out, suffix="") as tmp:
        tmp.mkdir()
        _pack_images(records, tmp / "images.npy", size, fit, workers)
        write_json(tmp / "meta.json", {
            "size": size,
            "fit": fit,
            "count": len(records),
            "manifest_sha256": sha256_file(data_dir / MANIFEST_NAME),
            "ids": [r.id for r in records],
        })
    log.info("cached %d images at %d px in %s", len(records), size, out)
    return out


def _pack_images(records: list[ImageRecord], path: Path, size: int, fit: Fit, workers: int) -> None:
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(records), size, size))

    def load_one(i: int) -> None:
        images[i] = fit_square(read_grayscale(records[i].path), size, fit=fit)

    # Threads suffice: PIL releases the GIL while decoding and resizing.
    with ThreadPoolExecutor(workers) as pool:
        list(tqdm(pool.map(load_one, range(len(records))), total=len(records), desc=f"cache {size}px", leave=False))
    images.flush()


def load_cache(data_dir: str | os.PathLike, size: int, *, fit: Fit = "resize", build: bool = True) -> ImageCache:
    """Memory-map the cache of `data_dir` at `size`, building (or rebuilding a stale one) when `build`."""
    data_dir = Path(data_dir)
    out = cache_dir(data_dir, size, fit)
    if not _is_current(out, data_dir):
        if not build:
            raise UserError(f"no current cache at {out}; run `mrisynth data cache {data_dir} --size {size}`")
        out.parent.mkdir(parents=True, exist_ok=True)
        # Parallel workers of one study may all find the cache missing: one builds it, the others wait and reuse.
        with FileLock(str(out.parent / f".{out.name}.lock")):
            if not _is_current(out, data_dir):
                build_cache(data_dir, size, fit=fit)
    records = load_manifest(data_dir)
    images = np.load(out / "images.npy", mmap_mode="r")
    if images.shape != (len(records), size, size):
        raise UserError(f"cache {out} has shape {images.shape}, expected {(len(records), size, size)}; delete it")
    return ImageCache(images=images, records=records, classes=load_classes(data_dir))


def _is_current(out: Path, data_dir: Path) -> bool:
    meta_path = out / "meta.json"
    if not meta_path.is_file() or not (out / "images.npy").is_file():
        return False
    try:
        meta = read_json(meta_path)
    except UserError:
        return False
    return meta.get("manifest_sha256") == sha256_file(data_dir / MANIFEST_NAME)
