"""Distances between two sets of features: Frechet distance, KID, and precision/recall/density/coverage.

All functions take (N, D) float arrays. `compare_sets` bundles them with intervals:

    fd, fd_ci        Frechet distance (Heusel et al. 2017) on the full sets; 95% bootstrap percentile interval
                     (resampled sets hold duplicates, which inflate FD: the interval sits mostly above the point
                     value; it shows spread for comparing sets of equal size, not exact coverage)
    kid, kid_ci      unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018), mean over random
                     subsets; the interval is the 2.5-97.5 percentiles of the subset estimates (subsampling
                     without replacement: duplicates from resampling would bias the unbiased estimator)
    precision, recall, density, coverage   k-NN manifold metrics (Naeem et al. 2020), k = `k`
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.distance import cdist


@dataclasses.dataclass
class DistanceConfig:
    """Settings of `compare_sets` (a part of AuditConfig)."""

    n_bootstrap: int = 50
    kid_subsets: int = 50
    kid_subset_size: int = 500
    k: int = 5


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 from rounding clipped)."""
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2).

    Tr sqrt(C1 C2) is computed as Tr sqrt(S C2 S) with S = C1^1/2: the matrix under the root is then symmetric
    PSD, so an eigendecomposition gives it stably even when C1 or C2 are singular (fewer samples than dims),
    where scipy.linalg.sqrtm on the non-symmetric C1 C2 returns complex noise.
    """
    s1 = _psd_sqrt(cov1)
    middle = np.linalg.eigvalsh(s1 @ cov2 @ s1)
    trace_sqrt = float(np.sqrt(np.clip(middle, 0, None)).sum())
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D); needs N, M >= 2."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Frechet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    return frechet_from_moments(a.mean(0), np.cov(a, rowvar=False, ddof=1).reshape(a.shape[1], -1),
                                b.mean(0), np.cov(b, rowvar=False, ddof=1).reshape(b.shape[1], -1))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    k = x @ y.T / x.shape[1] + 1.0
    return k * k * k  # twice as fast as k ** 3 in NumPy


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel (x.y / D + 1)^3; near 0 (possibly negative) for sets from one distribution."""
    m, n = len(a), len(b)
    kaa, kbb, kab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    within_a = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    within_b = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * kab.mean())


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, *, n_subsets: int, subset_size: int, rng: np.random.Generator
) -> tuple[float, list[float]]:
    """KID: mean unbiased MMD^2 over random subsets (each of min(subset_size, N, M) per set), and the 95% interval."""
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    values = np.array([
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(max(1, n_subsets))
    ])
    return float(values.mean()), [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-NN balls in Euclidean feature space.

    precision: share of fake samples inside some real sample's k-NN ball; recall: share of real samples inside
    some fake sample's k-NN ball; density: mean number of real balls holding a fake sample, divided by k;
    coverage: share of real samples whose ball holds at least one fake sample. Needs more than k samples per set.
    """
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} samples per set, "
                         f"got {len(real)} real and {len(fake)} synthetic")
    real_radius = _kth_neighbour_distance(real, k)  # (R,)
    fake_radius = _kth_neighbour_distance(fake, k)  # (F,)
    d_real_fake = cdist(real, fake)  # (R, F)
    inside_real = d_real_fake <= real_radius[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d_real_fake <= fake_radius[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float((d_real_fake.min(axis=1) <= real_radius).mean()),
    }


def _kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    # Column 0 of each sorted row is the point itself (distance 0), so the k-th neighbour is column k.
    return np.partition(d, k, axis=1)[:, k]


def compare_sets(
    real: np.ndarray, fake: np.ndarray, cfg: DistanceConfig, *, rng: np.random.Generator
) -> dict:
    """All distances between a real (R, D) and a synthetic (F, D) feature set, with intervals and notes.

    Metrics a set is too small for come back as None with the reason in `notes`.
    """
    out: dict = {"n_real": len(real), "n_synthetic": len(fake), "dim": int(real.shape[1]), "notes": []}
    if min(len(real), len(fake)) < 2:
        out["notes"].append("fewer than 2 images in a set: no distances")
        return out
    if min(len(real), len(fake)) <= real.shape[1]:
        out["notes"].append(
            f"fewer samples ({min(len(real), len(fake))}) than feature dimensions ({real.shape[1]}): the covariances "
            "are singular, so FD is computed but strongly biased upward; compare it only with real_vs_real "
            "at the same sample size, and prefer KID"
        )
    out["fd"] = frechet_distance(real, fake)
    boot = []
    for _ in range(cfg.n_bootstrap):
        boot.append(frechet_distance(real[rng.integers(0, len(real), len(real))],
                                     fake[rng.integers(0, len(fake), len(fake))]))
    out["fd_ci"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else None
    out["kid"], out["kid_ci"] = kernel_inception_distance(
        real, fake, n_subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, rng=rng)
    if min(len(real), len(fake)) > cfg.k:
        out.update(prdc(real, fake, k=cfg.k))
    else:
        out["notes"].append(f"precision/recall/density/coverage need more than k={cfg.k} images per set")
    return out
