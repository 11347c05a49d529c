"""The packed cache: every image of a manifest as uint8 at one square size, in one memory-mapped .npy.

This is what the trainers read: 3,064 slices at 256 px are 200 MB, loaded in milliseconds and small enough to
live on the GPU. Layout, under the manifest's folder:

    cache/<fit>-<size>/images.npy   (N, size, size) uint8, rows in manifest order
    cache/<fit>-<size>/meta.json    size, fit, ids, and the manifest's SHA-256 (a stale cache is rebuilt)

The manifest holds every image's SHA-256 and a cache is built only from files that match it, so a cache keyed by
the manifest's hash never holds pixels other than those the manifest describes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from mrisynth.data.images import Fit, fit_square, read_grayscale
from mrisynth.data.manifest import MANIFEST_NAME, ImageRecord, check_labels, load_classes, load_manifest
from mrisynth.errors import UserError
from mrisynth.files import atomic_path, ensure_writable_dir, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

MIN_SIZE = 8
# The largest side any model here uses is SD's 512 px (the Figshare slices are 512 px); 2048 leaves room for
# higher-resolution sources while refusing the typo that once asked for a 960 GB memory map (--size 100000).
MAX_SIZE = 2048
_SPARE_BYTES = 256 * 2**20  # keep some disk free beyond the cache itself


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
    """Decode, fit and pack every image of `data_dir/manifest.csv`; returns the cache folder.

    Each file is checked against the manifest's sha256 first: pixels changed since `data prepare` are an error
    (never cached and trained on), so a cache always holds what its manifest describes.
    """
    data_dir = Path(data_dir)
    check_cache_size(size)
    records = load_manifest(data_dir)
    if not records:
        raise UserError(f"{data_dir / MANIFEST_NAME} has no rows; nothing to cache")
    check_labels(records, load_classes(data_dir), where=str(data_dir / MANIFEST_NAME))
    out = cache_dir(data_dir, size, fit)
    workers = workers or min(8, os.cpu_count() or 1)
    _verify_hashes(records, data_dir, workers)
    ensure_writable_dir(out.parent, fix=f"the cache is written inside the data folder: make {data_dir} writable, "
                        "or copy the prepared folder somewhere writable and use the copy")
    _check_free_space(out.parent, len(records) * size * size)
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


def check_cache_size(size: int) -> None:
    """A UserError for a cache side outside MIN_SIZE..MAX_SIZE pixels (checked before any work)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"image size must be between {MIN_SIZE} and {MAX_SIZE} pixels; got {size}")


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + _SPARE_BYTES > free:
        raise UserError(f"the cache needs {needed / 2**30:.1f} GiB but {folder} has {free / 2**30:.1f} GiB free; "
                        "free space or choose a smaller size")


def _verify_hashes(records: list[ImageRecord], data_dir: Path, workers: int) -> None:
    """A UserError naming the first image whose bytes differ from the manifest's sha256 (rows without one pass)."""
    def changed(rec: ImageRecord) -> bool:
        return bool(rec.sha256) and sha256_file(rec.path) != rec.sha256

    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL
        flags = list(pool.map(changed, records))
    bad = [r for r, f in zip(records, flags) if f]
    if bad:
        raise UserError(f"{len(bad)} image(s) changed since the manifest was written, e.g. {bad[0].id} "
                        f"({bad[0].path}); restore them, or run `mrisynth data prepare` again to re-read them")
    unhashed = sum(not r.sha256 for r in records)
    if unhashed:
        log.warning("%d of %d rows of %s have no sha256: their pixels cannot be checked", unhashed, len(records),
                    data_dir / MANIFEST_NAME)


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
    check_cache_size(size)
    records, classes = load_manifest(data_dir), load_classes(data_dir)
    check_labels(records, classes, where=str(data_dir / MANIFEST_NAME))  # before training, not after it
    out = cache_dir(data_dir, size, fit)
    if not _is_current(out, data_dir):
        if not build:
            raise UserError(f"no current cache at {out}; run `mrisynth data cache {data_dir} --size {size}`")
        out.parent.mkdir(parents=True, exist_ok=True)
        # Parallel workers of one study may all find the cache missing: one builds it, the others wait and reuse.
        with FileLock(str(out.parent / f".{out.name}.lock")):
            if not _is_current(out, data_dir):
                build_cache(data_dir, size, fit=fit)
    images = np.load(out / "images.npy", mmap_mode="r")
    if images.shape != (len(records), size, size):
        raise UserError(f"cache {out} has shape {images.shape}, expected {(len(records), size, size)}; delete it")
    return ImageCache(images=images, records=records, classes=classes)


def _is_current(out: Path, data_dir: Path) -> bool:
    meta_path = out / "meta.json"
    if not meta_path.is_file() or not (out / "images.npy").is_file():
        return False
    try:
        meta = read_json(meta_path)
    except UserError:
        return False
    return meta.get("manifest_sha256") == sha256_file(data_dir / MANIFEST_NAME)
