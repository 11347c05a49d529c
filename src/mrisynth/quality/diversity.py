"""MS-SSIM (Wang et al. 2003), written out in torch, and within-class diversity as mean MS-SSIM over random pairs.

High mean pairwise MS-SSIM means images look alike: a generator that collapses onto a few outputs shows a
higher value than the real images of the same class. The scales adapt to small images: as many halvings
(up to the standard 5) as keep the smallest scale at least as large as the Gaussian window.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mrisynth.devices import resolve_device
from mrisynth.quality.distances import bootstrap_weights

# Standard per-scale exponents (Wang et al.); truncated and renormalised when fewer scales fit.
_SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_C1, _C2 = 0.01**2, 0.03**2  # for images in [0, 1]


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def msssim_scales(image_size: int, window: int = 11) -> tuple[int, int]:
    """(number of scales, window size) for square images of `image_size` px."""
    window = min(window, image_size if image_size % 2 else image_size - 1)
    scales = int(math.floor(math.log2(image_size / window))) + 1
    return max(1, min(len(_SCALE_WEIGHTS), scales)), max(1, window)


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, valid region only: (B, 1, H, W) -> (B, 1, H-w+1, W-w+1)."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean luminance*contrast*structure (SSIM) and contrast*structure (CS) per image pair: (B,), (B,)."""
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    var_x = _filter(x * x, g) - mu_x**2
    var_y = _filter(y * y, g) - mu_y**2
    cov = _filter(x * y, g) - mu_x * mu_y
    cs = (2 * cov + _C2) / (var_x + var_y + _C2)
    luminance = (2 * mu_x * mu_y + _C1) / (mu_x**2 + mu_y**2 + _C1)
    return (luminance * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """MS-SSIM of image pairs: x, y (B, 1, H, W) in [0, 1] -> (B,) in [0, 1]; 1 for identical images."""
    scales, window = msssim_scales(min(x.shape[-2:]), window)
    g = _gaussian_window(window, sigma).to(x.device)
    weights = torch.tensor(_SCALE_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    factors = []
    for level in range(scales):
        ssim, cs = _ssim_parts(x, y, g)
        # Negative CS (anti-correlated structure) would make fractional powers undefined: clamp at 0 as usual.
        factors.append((ssim if level == scales - 1 else cs).clamp_min(0))
        if level < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(factors, 1) ** weights, dim=1)


def _as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)[:, None]  # (N, 1, S, S)


def mean_pairwise_msssim(
    images: np.ndarray, *, n_pairs: int, rng: np.random.Generator, batch_size: int = 256,
    groups: np.ndarray | None = None, n_boot: int = 200,
) -> dict:
    """Mean MS-SSIM over up to `n_pairs` random distinct pairs of (N, S, S) uint8 images, with a 95% interval.

    The interval is a percentile bootstrap over images (over `groups`, e.g. patients, where given): a resample
    weights each drawn pair by how often both its images were drawn. Pairs sharing an image are correlated,
    so the spread of the pair values alone (the former interval) was about twice too narrow.
    Returns {"msssim": None, ...} when there are fewer than 2 images.
    """
    n = len(images)
    if n < 2:
        return {"msssim": None, "msssim_ci": None, "n_pairs": 0}
    first = rng.integers(0, n, n_pairs)
    second = (first + rng.integers(1, n, n_pairs)) % n  # never the same image twice
    # The Gaussian filtering is most of the audit's CPU time; a GPU does it in moments.
    device = resolve_device("auto")
    values = []
    with torch.inference_mode():
        for start in range(0, n_pairs, batch_size):
            a = _as_tensor(images[first[start:start + batch_size]]).to(device)
            b = _as_tensor(images[second[start:start + batch_size]]).to(device)
            values.append(ms_ssim(a, b).cpu())
    v = torch.cat(values).double().numpy()  # (n_pairs,)
    weights = bootstrap_weights(groups, n, n_boot, rng)  # (B, N) draws of each image
    pair_w = weights[:, first] * weights[:, second]  # (B, n_pairs)
    total = pair_w.sum(1)
    boots = (pair_w @ v)[total > 0] / total[total > 0]
    ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if len(boots) else None
    return {"msssim": float(v.mean()), "msssim_ci": ci, "n_pairs": int(len(v))}
