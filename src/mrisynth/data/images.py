"""Reading one image as a grayscale array, and fitting it into a square.

MRI is one channel. Files stored as RGB are accepted when the three channels carry the same picture
(a grey image saved as colour; JPEG chroma noise tolerated) and refused when they are truly coloured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from mrisynth.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
Fit = Literal["resize", "letterbox"]

# Largest mean absolute difference between colour channels still taken for "grey stored as RGB".
_GREY_TOLERANCE = 3.0


def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a 2-D array: uint8 for 8-bit files, uint16 for 16-bit ones."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return _to_grayscale(img, path)
    except FileNotFoundError as exc:
        raise UserError(f"image file {path} does not exist") from exc
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels: corrupt or hostile
        raise UserError(f"{path} claims more pixels than PIL will decode ({exc}); it cannot be an MRI slice: "
                        "remove or replace it") from exc
    except PermissionError as exc:
        raise UserError(f"cannot read image file {path}: permission denied; make it readable or remove it") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"{path} is not a readable image ({exc.__class__.__name__}); remove or replace it") from exc


def _to_grayscale(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise UserError(f"{path} holds values outside 0..65535; convert it to 8 or 16 bit")
        return arr.astype(np.uint16)
    if img.mode == "F":
        return to_uint8(np.asarray(img, dtype=np.float32))
    rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    spread = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    if spread / 2 > _GREY_TOLERANCE:
        raise UserError(
            f"{path} is a colour image (channels differ by {spread / 2:.1f} grey levels on average); "
            "mrisynth expects grayscale MRI: convert it to grayscale or remove it"
        )
    return np.asarray(img.convert("L"), dtype=np.uint8)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any 2-D array to uint8 (uint8 passes through unchanged)."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def fit_square(arr: np.ndarray, size: int, *, fit: Fit = "resize") -> np.ndarray:
    """Resize a 2-D uint8 array to (size, size): stretch (`resize`) or keep aspect and pad black (`letterbox`)."""
    img = Image.fromarray(to_uint8(arr))
    if fit == "resize" or img.width == img.height:
        return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    scale = size / max(img.width, img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(img.resize((w, h), Image.Resampling.BICUBIC), ((size - w) // 2, (size - h) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def save_grayscale_png(arr: np.ndarray, path: str | os.PathLike) -> None:
    """Save a 2-D uint8 array as a one-channel PNG."""
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {arr.shape}")
    Image.fromarray(to_uint8(arr), mode="L").save(path)
