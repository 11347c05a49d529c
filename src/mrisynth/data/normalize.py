"""MRI intensity normalisation: one function family for real, synthetic, external and generator-training images.

MRI intensities have no absolute scale: another scanner or protocol gives the same anatomy other grey levels
(the Figshare slices average 40, another public collection 71). A setting `normalize` names one of:

    none                  the image as stored (the reference recipe: the model sees x / 255)
    percentile[:LO-HI]    per image, the LO..HI percentiles (default 0.5..99.5) stretched to 0..255, clipped
    zscore                per image, z-score within the head mask (Otsu threshold, holes filled, largest
                          component); inside the head grey = 96 + 40 z (clipped to 0..255), outside = 0

Every method maps a 2-D image (uint8 or uint16) to uint8, so a normalised set still lives on the device as uint8
and the rest of the pipeline (augmentation, x / 255) is unchanged. `none` returns its input untouched. Normalised
images are near fixed points (a second pass changes the mean pixel by under 0.1 grey level on the phantom; a
few pixels at the head's edge move under z-score), so synthetic images from a generator trained on normalised
images can go through the same setting again.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from mrisynth.data.images import to_uint8
from mrisynth.errors import UserError

NONE = "none"
PERCENTILE = "percentile"
ZSCORE = "zscore"
METHODS = (NONE, PERCENTILE, ZSCORE)
DEFAULT_PERCENTILES = (0.5, 99.5)
# z-score -> grey level: the head's mean at 96 and one standard deviation 40 grey levels keep z in about
# [-2.4, 4] (dark skull and CSF to bright fat and enhancing vessels) without clipping most of the head.
ZSCORE_CENTRE = 96.0
ZSCORE_SCALE = 40.0

_SPEC_HELP = "use none, percentile, percentile:LO-HI (e.g. percentile:0.5-99.5) or zscore"


@dataclasses.dataclass(frozen=True)
class Normalization:
    """A parsed `normalize` setting."""

    method: str
    low: float = DEFAULT_PERCENTILES[0]  # percentile method only
    high: float = DEFAULT_PERCENTILES[1]

    @property
    def spec(self) -> str:
        """The canonical setting string (what a run's config records)."""
        if self.method == PERCENTILE and (self.low, self.high) != DEFAULT_PERCENTILES:
            return f"{PERCENTILE}:{self.low:g}-{self.high:g}"
        return self.method


def parse_normalization(spec: str | Normalization) -> Normalization:
    """`"percentile:1-99"` -> Normalization(percentile, 1, 99); an unknown or malformed spec is a UserError."""
    if isinstance(spec, Normalization):
        return spec
    text = str(spec).strip().lower()
    method, _, args = text.partition(":")
    if method not in METHODS or (args and method != PERCENTILE):
        raise UserError(f"normalize '{spec}' is not known; {_SPEC_HELP}")
    if not args:
        return Normalization(method)
    try:
        low, high = (float(v) for v in args.split("-"))
    except ValueError as exc:
        raise UserError(f"normalize '{spec}': percentiles must read LO-HI, e.g. percentile:0.5-99.5") from exc
    if not 0.0 <= low < high <= 100.0:
        raise UserError(f"normalize '{spec}': need 0 <= LO < HI <= 100, e.g. percentile:0.5-99.5")
    return Normalization(PERCENTILE, low, high)


def normalize_image(image: np.ndarray, spec: str | Normalization) -> np.ndarray:
    """One 2-D image (uint8 or uint16) -> uint8 (H, W) under `spec`; `none` returns uint8 input unchanged."""
    norm = parse_normalization(spec)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if norm.method == NONE:
        return to_uint8(image)  # uint8 passes through unchanged; 16-bit is min-max scaled, as the cache does
    if norm.method == PERCENTILE:
        lo, hi = np.percentile(image, [norm.low, norm.high])
        return _stretch(image, float(lo), float(hi))
    return _zscore(image)


def normalize_images(images: np.ndarray, spec: str | Normalization) -> np.ndarray:
    """A stack (N, H, W) uint8 -> (N, H, W) uint8, each image normalised on its own; `none` returns `images`."""
    norm = parse_normalization(spec)
    if norm.method == NONE:
        return images
    if images.ndim != 3:
        raise ValueError(f"expected an (N, H, W) stack, got shape {images.shape}")
    if norm.method == PERCENTILE and len(images):
        # One vectorised percentile call for the whole stack: ~10x faster than image by image.
        flat = images.reshape(len(images), -1)
        bounds = np.percentile(flat, [norm.low, norm.high], axis=1)  # (2, N)
        return np.stack([_stretch(img, float(lo), float(hi)) for img, lo, hi in zip(images, *bounds)])
    return np.stack([normalize_image(img, norm) for img in images]) if len(images) else images.astype(np.uint8)


def head_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: the head, as the largest connected region above the Otsu threshold, holes filled."""
    threshold = otsu_threshold(image)
    above = image > threshold
    labels, count = ndimage.label(above)
    if count == 0:
        return above
    sizes = np.bincount(labels.ravel())[1:]  # label 0 is the background
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def otsu_threshold(image: np.ndarray) -> float:
    """The grey level that maximises the between-class variance of the image's histogram (Otsu, 1979)."""
    values = image.ravel()
    if values.dtype == np.uint8:
        counts = np.bincount(values, minlength=256).astype(np.float64)
        centres = np.arange(256, dtype=np.float64)
    else:
        counts, edges = np.histogram(values.astype(np.float64), bins=256)
        centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)  # pixels at or below each candidate threshold
    total = weight[-1]
    mass = np.cumsum(counts * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (mass[-1] - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return float(centres[int(np.argmax(between))])


def _zscore(image: np.ndarray) -> np.ndarray:
    mask = head_mask(image)
    out = np.zeros(image.shape, dtype=np.uint8)
    if mask.sum() < 2:
        return out  # a blank image has no head to normalise within
    inside = image[mask].astype(np.float64)
    sd = float(inside.std())
    if sd <= 0:
        return out
    z = (inside - inside.mean()) / sd
    out[mask] = np.clip(np.round(ZSCORE_CENTRE + ZSCORE_SCALE * z), 0, 255).astype(np.uint8)
    return out


def _stretch(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)  # a flat image carries no contrast to stretch
    scaled = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
