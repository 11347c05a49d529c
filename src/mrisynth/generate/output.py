"""The synthetic-set contract shared by every generator backend.

    SYN/<class>/<id>.png     one-channel 8-bit PNGs
    SYN/manifest.csv         the same manifest format the readers write, source=synthetic, provenance filled
    SYN/classes.json         class order of the real data the generator was trained on

Writing is resumable: each PNG is written atomically, and its provenance line is appended (fsync'd once per
batch) only after its PNG is complete, so `existing_ids()` tells a restarted sampler exactly which ones are done;
the manifest is written last, atomically, from the provenance sidecar. PNGs are encoded on a background thread
while the sampler draws the next batch; the bytes on disk are the same as writing them in line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord, save_classes, save_manifest
from mrisynth.errors import UserError
from mrisynth.files import (
    append_jsonl,
    atomic_path,
    claim_output_dir,
    ensure_writable_dir,
    read_jsonl,
    sha256_file,
)

_SIDECAR = ".provenance.jsonl"


GENERATOR_KIND, SYNTHETIC_KIND = "generator", "synthetic"  # output-folder kinds (files.claim_output_dir)


def claim_generator_dir(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Hold `path` as a generator folder for a training run: one process, and never another kind of output.

    Folders of the previous version (no marker) are adopted when they hold a generator run's config.yaml."""
    return claim_output_dir(path, GENERATOR_KIND, legacy=lambda p: (p / "config.yaml").is_file())


def claim_synthetic_dir(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Hold `path` as a synthetic set for a sampling run (earlier sets: their provenance sidecar)."""
    return claim_output_dir(path, SYNTHETIC_KIND, legacy=lambda p: (p / _SIDECAR).is_file())


def synthetic_id(class_name: str, index: int) -> str:
    """Stable id of the index-th synthetic image of a class (the same on every rerun)."""
    return f"syn-{class_name}-{index:06d}"


class SyntheticWriter:
    """Writes synthetic images and their provenance; a rerun skips what is already written."""

    def __init__(self, out_dir: str | os.PathLike, classes: Sequence[str], *, generator_sha256: str) -> None:
        self.out_dir = ensure_writable_dir(out_dir)
        self.classes = list(classes)
        self.generator_sha256 = generator_sha256
        self._sidecar = self.out_dir / _SIDECAR
        self._records: dict[str, ImageRecord] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="png-writer")
        self._batches: list[list[tuple[Future, ImageRecord]]] = [[]]  # oldest first; the last one is open
        # A sampler killed while saving leaves a temporary file (see files.atomic_path): remove it.
        for stale in self.out_dir.glob("*/.*.tmp*"):
            stale.unlink()
        for row in read_jsonl(self._sidecar):  # a line torn by a crash is skipped; its image is made again
            try:
                rec = ImageRecord(**row)
            except TypeError:
                continue
            if rec.generator_sha256 != generator_sha256:
                raise UserError(
                    f"{self.out_dir} holds images from another generator (sha256 {rec.generator_sha256[:12]}...); "
                    "sample into a new --out folder, or delete this one"
                )
            if Path(rec.path).is_file():
                self._records[rec.id] = rec

    def existing_ids(self) -> set[str]:
        """Ids already written (PNG present and provenance recorded)."""
        return set(self._records)

    def add(
        self,
        image: np.ndarray,  # (H, W) uint8
        *,
        image_id: str,
        class_name: str,
        prompt: str = "",
        seed: int,
        steps: int,
        guidance: float | None = None,
        strength: float | None = None,
        source_image_id: str = "",
    ) -> ImageRecord:
        """Queue one image to be saved as a one-channel PNG; its provenance is recorded once the PNG is written.

        `steps` is the number of denoising steps that ran (not the number requested). Call `end_batch()` after
        each batch and `finish()` at the end.
        """
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
        class_dir = self.out_dir / class_name
        class_dir.mkdir(exist_ok=True)
        path = class_dir / f"{image_id}.png"
        rec = ImageRecord(
            id=image_id, path=str(path.resolve()), class_name=class_name, label=self.classes.index(class_name),
            width=image.shape[1], height=image.shape[0], source="synthetic", prompt=prompt, seed=seed,
            steps=steps, guidance=guidance, strength=strength, source_image_id=source_image_id,
            generator_sha256=self.generator_sha256, split="train",
        )
        self._batches[-1].append((self._pool.submit(_save_png, image.copy(), path), rec))
        return rec

    def end_batch(self) -> None:
        """Close the current batch; record every earlier batch whose PNGs are done (one fsync per batch).

        One batch stays in flight, so its PNGs are encoded while the sampler draws the next one.
        """
        self._batches.append([])
        while len(self._batches) > 2:
            self._record(self._batches.pop(0))

    def flush(self) -> None:
        """Wait for every queued PNG and record its provenance."""
        for batch in self._batches:
            self._record(batch)
        self._batches = [[]]

    def close(self) -> None:
        """Stop the background writer (after `flush`, or after an error: unrecorded PNGs are redone on resume)."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> SyntheticWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(self, batch: list[tuple[Future, ImageRecord]]) -> None:
        for future, _ in batch:
            future.result()  # re-raises a failed write (e.g. disk full) in the sampler's thread
        rows = [dataclasses.asdict(rec) for _, rec in batch]
        if rows:
            _append_records(self._sidecar, rows)
        self._records.update((rec.id, rec) for _, rec in batch)

    def finish(self, *, keep: Collection[str] | None = None) -> Path:
        """Write manifest.csv and classes.json (sorted by class then id); returns the manifest path.

        `keep`: the ids this request asked for. Images written earlier for a larger request stay on disk but
        leave the manifest, so asking for fewer images per class gives a set of exactly that size.
        """
        try:
            self.flush()
        finally:
            self.close()
        wanted = None if keep is None else set(keep)
        chosen = [r for r in self._records.values() if wanted is None or r.id in wanted]
        records = sorted(chosen, key=lambda r: (r.label, r.id))
        for rec in records:
            rec.sha256 = rec.sha256 or sha256_file(rec.path)
        save_classes(self.classes, self.out_dir)
        return save_manifest(records, self.out_dir / "manifest.csv")


def _save_png(image: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_grayscale_png(image, tmp)


def _append_records(path: Path, rows: list[dict]) -> None:
    """Append JSONL lines in one write and one fsync (append_jsonl's format and torn-line handling)."""
    if len(rows) == 1:
        append_jsonl(path, rows[0])
        return
    torn = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + text)
        f.flush()
        os.fsync(f.fileno())
