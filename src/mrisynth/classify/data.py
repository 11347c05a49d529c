"""Assembling a classifier's training, validation and test sets from packed caches, resident on the device.

Real and synthetic folders both go through `load_cache(dir, image_size, fit=...)`, so sets made at different native
sizes meet at the model's input size, and then through the same intensity normalisation (data/normalize.py).
Validation and test are always the real `val` / `test` splits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mrisynth.data.cache import ImageCache, load_cache
from mrisynth.data.images import Fit
from mrisynth.data.manifest import load_classes, require_source
from mrisynth.data.normalize import NONE, Normalization, normalize_images, parse_normalization
from mrisynth.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainData:
    """Which images a classifier trains on. None for an id list means "all" (all train rows / all synthetic)."""

    real_dir: Path
    synthetic_dir: Path | None = None
    real_train_ids: list[str] | None = None  # [] = no real training images (synthetic-only control)
    synthetic_ids: list[str] | None = None  # [] = none
    samples_per_epoch: int | None = None  # None = training-set size; larger oversamples (compute-matched control)


@dataclasses.dataclass
class DeviceSet:
    """Images of one set as a uint8 tensor on the device, with labels and ids."""

    images: torch.Tensor  # (N, 1, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass
class PreparedData:
    train: DeviceSet
    val: DeviceSet
    test: DeviceSet
    classes: list[str]
    train_real: int
    train_synthetic: int


def load_train_data(
    data: TrainData,
    *,
    image_size: int,
    device: torch.device | str,
    normalize: str = NONE,
    fit: Fit = "resize",
) -> PreparedData:
    """Load the caches once, normalise the selected images (`normalize`) and move them to `device` as uint8."""
    norm = parse_normalization(normalize)  # a bad setting fails here, before any cache is built
    real_dir = Path(data.real_dir)
    classes = load_classes(real_dir)
    real = load_cache(real_dir, image_size, fit=fit)
    require_source(real.records, "real", where=str(real_dir))  # scores on synthetic "test" images mean nothing
    train_rows = _pick(real, real.indices("train"), data.real_train_ids, what=f"real train split of {real_dir}")
    parts = [(real, train_rows)]
    n_synthetic = 0
    if data.synthetic_dir is not None:
        syn_dir = Path(data.synthetic_dir)
        syn_classes = load_classes(syn_dir)
        if syn_classes != classes:
            raise UserError(
                f"synthetic set {syn_dir} has classes {syn_classes} but the real data has {classes}; "
                "generate it from a generator trained on this data folder"
            )
        synthetic = load_cache(syn_dir, image_size, fit=fit)
        # e.g. a prepared real data folder: its val/test images would leak into training
        require_source(synthetic.records, "synthetic", where=str(syn_dir))
        syn_rows = _pick(synthetic, synthetic.indices(None), data.synthetic_ids, what=f"synthetic set {syn_dir}")
        parts.append((synthetic, syn_rows))
        n_synthetic = len(syn_rows)
    elif data.synthetic_ids:
        raise UserError("synthetic_ids given without a synthetic folder; pass --synthetic DIR")
    if len(train_rows) + n_synthetic == 0:
        raise UserError("the training set is empty: select some real training images or a synthetic set")
    val, test = real.indices("val"), real.indices("test")
    for name, rows in (("val", val), ("test", test)):
        if len(rows) == 0:
            raise UserError(f"{real_dir}/manifest.csv has no '{name}' rows; prepare the data with a {name} split")
    log.info("training on %d real + %d synthetic images at %d px (%s, normalize %s)", len(train_rows), n_synthetic,
             image_size, fit, norm.spec)
    return PreparedData(
        train=_to_device(parts, device, norm),
        val=_to_device([(real, val)], device, norm),
        test=_to_device([(real, test)], device, norm),
        classes=classes,
        train_real=len(train_rows),
        train_synthetic=n_synthetic,
    )


def _pick(cache: ImageCache, default_rows: np.ndarray, ids: Sequence[str] | None, *, what: str) -> np.ndarray:
    """Rows of `cache` for `ids` (None = `default_rows`); unknown ids are an error, not silently dropped."""
    if ids is None:
        return default_rows
    allowed = {cache.records[i].id: int(i) for i in default_rows}
    unknown = [i for i in ids if i not in allowed]
    if unknown:
        raise UserError(f"{len(unknown)} id(s) not in the {what}, e.g. '{unknown[0]}'; check the id list")
    return np.array([allowed[i] for i in ids], dtype=np.int64)


def _to_device(parts: list[tuple[ImageCache, np.ndarray]], device: torch.device | str, norm: Normalization) -> DeviceSet:
    images, labels, ids = [], [], []
    for cache, rows in parts:
        rows = np.sort(rows)  # memory-mapped reads are fastest in file order
        images.append(normalize_images(np.asarray(cache.images[rows]), norm))
        labels.append(cache.labels[rows])
        ids.extend(cache.records[i].id for i in rows)
    size = parts[0][0].images.shape[-1]
    stacked = np.concatenate(images) if images else np.zeros((0, size, size), np.uint8)
    return DeviceSet(
        images=torch.from_numpy(stacked).unsqueeze(1).to(device),  # (N, 1, S, S) uint8
        labels=torch.from_numpy(np.concatenate(labels)).to(device),
        ids=ids,
    )


def epoch_order(n: int, samples: int, *, generator: torch.Generator) -> torch.Tensor:
    """`samples` indices into a set of `n`: whole shuffled passes, the last one cut short (oversampling when > n)."""
    passes = [torch.randperm(n, generator=generator, device=generator.device) for _ in range(-(-samples // n))]
    return torch.cat(passes)[:samples]
