"""Distances between two sets of features: Frechet distance, KID, and precision/recall/density/coverage.

All functions take (N, D) float arrays. `compare_sets` bundles them with intervals:

    fd, fd_ci        Frechet distance (Heusel et al. 2017) on the full sets; 95% bootstrap percentile interval
                     (resampled sets hold duplicates, which inflate FD: the interval sits mostly above the point
                     value; it shows spread for comparing sets of equal size, not exact coverage)
    kid, kid_ci      unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018) on up to
                     `kid_subset_size` images per set (a seeded random subset when more); 95% percentile
                     interval of a bootstrap over images, each resample scored without the pairs of an image
                     with its own copies (those would bias the unbiased estimator upward)
    precision, recall, density, coverage   k-NN manifold metrics (Naeem et al. 2020), k = `k`, with the
                     reference implementation's strict "inside the ball" (distance < radius)

Bootstraps resample real images by patient when `real_groups` / `fake_groups` give each image's patient
(slices of one patient are near-duplicates: resampling them one by one makes intervals too narrow).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.distance import cdist


@dataclasses.dataclass
class DistanceConfig:
    """Settings of `compare_sets` (a part of AuditConfig)."""

    n_bootstrap: int = 50  # resamples for the FD and KID intervals
    kid_subset_size: int = 1000  # images per set KID uses (kernel matrices of this size are held in memory)
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
    a: np.ndarray, b: np.ndarray, *, subset_size: int, n_bootstrap: int, rng: np.random.Generator,
    a_groups: np.ndarray | None = None, b_groups: np.ndarray | None = None,
) -> tuple[float, list[float] | None]:
    """KID (unbiased MMD^2 on up to `subset_size` images per set) and its 95% bootstrap interval over images
    (over groups, e.g. patients, where given); the interval is None without resamples."""
    if min(len(a), len(b)) < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    pick_a = _subset(len(a), subset_size, rng)
    pick_b = _subset(len(b), subset_size, rng)
    kaa, kbb = _poly_kernel(a[pick_a], a[pick_a]), _poly_kernel(b[pick_b], b[pick_b])
    kab = _poly_kernel(a[pick_a], b[pick_b])
    ones_a, ones_b = np.ones((1, len(pick_a))), np.ones((1, len(pick_b)))
    value = float(_weighted_mmd2(kaa, kbb, kab, ones_a, ones_b)[0])
    if n_bootstrap <= 0:
        return value, None
    wa = bootstrap_weights(None if a_groups is None else np.asarray(a_groups)[pick_a], len(pick_a), n_bootstrap, rng)
    wb = bootstrap_weights(None if b_groups is None else np.asarray(b_groups)[pick_b], len(pick_b), n_bootstrap, rng)
    boots = _weighted_mmd2(kaa, kbb, kab, wa, wb)
    boots = boots[np.isfinite(boots)]
    return value, [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if len(boots) else None


def _subset(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)


def bootstrap_weights(groups: np.ndarray | None, n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) counts: how often each image enters each resample (all images of a drawn group together)."""
    if groups is None:
        groups = np.arange(n)
    labels, index = np.unique(groups, return_inverse=True)
    drawn = rng.integers(0, len(labels), size=(n_boot, len(labels)))  # (B, G) groups drawn with replacement
    counts = np.zeros((n_boot, len(labels)))
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return counts[:, index]


def _weighted_mmd2(kaa: np.ndarray, kbb: np.ndarray, kab: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 of resamples given as image counts wa (B, M), wb (B, N): pairs of an image with itself
    or its copies are left out of the within-set means. With all counts 1 it is `mmd2_unbiased`."""

    def within(k: np.ndarray, w: np.ndarray) -> np.ndarray:
        pairs = w.sum(1) ** 2 - (w * w).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (((w @ k) * w).sum(1) - (w * w) @ np.diag(k)) / pairs

    cross = ((wa @ kab) * wb).sum(1) / (wa.sum(1) * wb.sum(1))
    return within(kaa, wa) + within(kbb, wb) - 2 * cross


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-NN balls in Euclidean feature space.

    precision: share of fake samples inside some real sample's k-NN ball; recall: share of real samples inside
    some fake sample's k-NN ball; density: mean number of real balls holding a fake sample, divided by k;
    coverage: share of real samples whose ball holds at least one fake sample. "Inside" is strict
    (distance < radius), as in the reference code: a ball's k-th neighbour sits on its edge, and counting it
    would give exact copies density (k + 1) / k. Needs more than k samples per set.
    """
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} samples per set, "
                         f"got {len(real)} real and {len(fake)} synthetic")
    real_radius = _kth_neighbour_distance(real, k)  # (R,)
    fake_radius = _kth_neighbour_distance(fake, k)  # (F,)
    d_real_fake = cdist(real, fake)  # (R, F)
    inside_real = d_real_fake < real_radius[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d_real_fake < fake_radius[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float((d_real_fake.min(axis=1) < real_radius).mean()),
    }


def _kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    # Column 0 of each sorted row is the point itself (distance 0), so the k-th neighbour is column k.
    return np.partition(d, k, axis=1)[:, k]


def compare_sets(
    real: np.ndarray, fake: np.ndarray, cfg: DistanceConfig, *, rng: np.random.Generator,
    real_groups: np.ndarray | None = None, fake_groups: np.ndarray | None = None,
) -> dict:
    """All distances between a real (R, D) and a synthetic (F, D) feature set, with intervals and notes.

    `real_groups` / `fake_groups` (one label per row, e.g. the patient) make the bootstraps resample whole
    groups. Metrics a set is too small for come back as None with the reason in `notes`.
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
    real_w = bootstrap_weights(real_groups, len(real), cfg.n_bootstrap, rng).astype(np.int64)
    fake_w = bootstrap_weights(fake_groups, len(fake), cfg.n_bootstrap, rng).astype(np.int64)
    boot = [frechet_distance(np.repeat(real, wr, axis=0), np.repeat(fake, wf, axis=0))
            for wr, wf in zip(real_w, fake_w) if wr.sum() >= 2 and wf.sum() >= 2]
    out["fd_ci"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else None
    out["kid"], out["kid_ci"] = kernel_inception_distance(
        real, fake, subset_size=cfg.kid_subset_size, n_bootstrap=cfg.n_bootstrap, rng=rng,
        a_groups=real_groups, b_groups=fake_groups)
    if min(len(real), len(fake)) > cfg.k:
        out.update(prdc(real, fake, k=cfg.k))
    else:
        out["notes"].append(f"precision/recall/density/coverage need more than k={cfg.k} images per set")
    return out
