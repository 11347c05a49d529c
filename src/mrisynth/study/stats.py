"""Statistics for comparing conditions: confidence intervals, paired tests, multiple-comparison correction.

Everything is seeded (bootstrap resamples come from `numpy.random.default_rng(seed)`), so a report is
reproducible. Inputs are per-image correctness arrays (bool, one per test image) aligned by image id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sstats

EXACT_BELOW = 25  # McNemar: exact binomial test when the discordant pairs are fewer than this


def t_interval(
    values: Sequence[float], *, confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict:
    """Mean and t-based confidence interval across runs (seeds); the interval is NaN for a single value.

    `bounds` clips the interval to the metric's range (e.g. (0, 1) for accuracy): with few seeds the
    symmetric t-interval can reach past 100%, which no reader should see.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "sd": math.nan, "n": n}
    sd = float(x.std(ddof=1))
    half = float(sstats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "lo": lo, "hi": hi, "sd": sd, "n": n}


def bootstrap_ci(correct: np.ndarray, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Accuracy of one trial and its percentile bootstrap interval over test images."""
    c = np.asarray(correct, dtype=float)  # (N,) 1 = correct
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(c), size=(n_boot, len(c)))
    boots = c[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return {"accuracy": float(c.mean()), "lo": float(np.percentile(boots, tail)),
            "hi": float(np.percentile(boots, 100 - tail))}


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Accuracy difference b - a over the same test images, with its bootstrap interval and two-sided p.

    Arrays may be (N,) for one seed or (S, N) for S seeds on the same N images: images are resampled
    (the same resample for every seed), so seed pairs stay paired and image-to-image variation is what counts.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))  # (S, N)
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    per_image = (b - a).mean(axis=0)  # (N,) mean over seeds
    diff = float(per_image.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_image), size=(n_boot, len(per_image)))
    boots = per_image[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    # Two-sided p: how often the resampled difference falls on the other side of zero (ties count half).
    below = (np.sum(boots < 0) + 0.5 * np.sum(boots == 0)) / n_boot
    above = (np.sum(boots > 0) + 0.5 * np.sum(boots == 0)) / n_boot
    p = float(min(1.0, 2 * min(below, above)))
    if np.all(per_image == 0):
        p = 1.0
    return {"diff": diff, "lo": float(np.percentile(boots, tail)), "hi": float(np.percentile(boots, 100 - tail)),
            "p": p}


def sign_flip_test(correct_a: np.ndarray, correct_b: np.ndarray, *, n_perm: int = 2000, seed: int = 0) -> dict:
    """Paired permutation test of "b and a are equally accurate" over test images; the test of record.

    Arrays are (N,) for one seed or (S, N) for S seeds on the same N images. The statistic is the mean over
    images of each image's difference averaged over seeds; under the null, swapping a and b on an image (for
    every seed at once) is as likely as not, so each image's difference has its sign flipped at random.
    Seeds only sharpen each image's difference: they are not counted as extra independent observations, so
    adding seeds that repeat the same predictions leaves p unchanged (summing McNemar's discordant pairs over
    seeds would not). p = (1 + #{|T*| >= |T|}) / (1 + n_perm), never 0.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))  # (S, N)
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    per_image = (b - a).mean(axis=0)  # (N,)
    observed = float(per_image.mean())
    if not np.any(per_image):
        return {"diff": observed, "p": 1.0, "n_perm": 0}
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_perm, 500):  # chunks keep memory small for thousands of images
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(500, n_perm - start), len(per_image)))  # (P, N)
        null = signs @ per_image / len(per_image)  # (P,) mean difference under random swaps
        extreme += int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return {"diff": observed, "p": (1 + extreme) / (1 + n_perm), "n_perm": n_perm}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test on one seed's paired predictions (N,): exact binomial below EXACT_BELOW discordant
    pairs, else chi2 with continuity correction.

    One seed only: the seeds of a study share their test images, so their discordant pairs are not
    independent and must not be summed (use `sign_flip_test` across seeds).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"mcnemar takes two (N,) arrays of one seed; got {a.shape} and {b.shape}")
    only_a = int(np.sum(a & ~b))  # a right, b wrong
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p": 1.0, "method": "none (no discordant pairs)"}
    if n < EXACT_BELOW:
        p = float(sstats.binomtest(only_b, n, 0.5).pvalue)
        return {"only_a": only_a, "only_b": only_b, "p": min(1.0, p), "method": "exact binomial"}
    chi2 = (abs(only_a - only_b) - 1) ** 2 / n
    return {"only_a": only_a, "only_b": only_b, "p": float(sstats.chi2.sf(chi2, 1)), "method": "chi2 (continuity)"}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; monotone; capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def verdict(diff: float, p_adjusted: float, *, alpha: float = 0.05) -> str:
    """A plain reading of one comparison against real-only."""
    if p_adjusted < alpha and diff > 0:
        return "helps"
    if p_adjusted < alpha and diff < 0:
        return "hurts"
    return "no detectable difference"
