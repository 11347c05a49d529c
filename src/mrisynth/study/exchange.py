"""What a synthetic set is worth in real images: the exchange rate.

The real-only condition at each real fraction gives a curve of test accuracy against the number of real training
images N (one point per fraction, the mean over runs). A synthetic condition at fraction f, with N_f real images
and accuracy A, is worth as much as N_eq real images, where the real-only curve reaches A; it is "worth
N_eq - N_f more real images". The curve is made non-decreasing (a running maximum: more real images never count
as worse) and read between points by linear interpolation in log N, since accuracy grows roughly with log N.
Outside the curve there is no number: "beyond" says "above" (better than real-only with all the real images
measured) or "below" (worse than the smallest fraction).

The interval is a percentile bootstrap over training runs: seeds are resampled with replacement, the same seeds
for every condition and fraction (runs are paired by seed), and the whole curve and condition mean recomputed.
It reflects run-to-run variation only; the test images are shared by every point, so their sampling error moves
the curve and the condition together and largely cancels in N_eq.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from mrisynth.study.names import BASELINE, RATIO


def equivalent_real_images(curve: Sequence[tuple[float, float]], accuracy: float) -> tuple[float | None, str | None]:
    """(N_eq, None), or (None, "above" | "below") when `accuracy` is outside the real-only curve.

    `curve`: (real images, accuracy) points of the real-only condition, in any order.
    """
    points = sorted(curve)
    if len(points) < 2 or any(n <= 0 for n, _ in points):
        return None, None
    ns = np.array([n for n, _ in points], dtype=float)
    acc = np.maximum.accumulate(np.array([a for _, a in points], dtype=float))  # more data never counts as worse
    if accuracy > acc[-1] + 1e-12:
        return None, "above"
    if accuracy < acc[0] - 1e-12:
        return None, "below"
    i = int(np.searchsorted(acc, accuracy, side="left"))  # first point reaching the accuracy
    if i == 0 or acc[i] == acc[i - 1]:
        return float(ns[i]), None
    t = (accuracy - acc[i - 1]) / (acc[i] - acc[i - 1])
    return float(math.exp(math.log(ns[i - 1]) + t * (math.log(ns[i]) - math.log(ns[i - 1])))), None


def exchange_rates(trials: Sequence[dict], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per ratio condition and fraction: its real images, their real-image equivalent and its interval.

    Each trial is a dict with "fraction", "condition", "kind", "seed", "train_real" and "test_accuracy".
    Needs the real-only condition at two or more fractions; returns [] otherwise.
    """
    acc: dict[tuple[float, str], dict[int, float]] = defaultdict(dict)
    real: dict[float, int] = {}
    for t in trials:
        if t["kind"] == RATIO and t.get("test_accuracy") is not None:
            acc[(t["fraction"], t["condition"])][t["seed"]] = float(t["test_accuracy"])
            if t["condition"] == BASELINE:
                real[t["fraction"]] = int(t["train_real"])
    fractions = sorted(real)
    if len(fractions) < 2:
        return []
    seeds = sorted(set.intersection(*(set(v) for v in acc.values())))
    if not seeds:
        return []
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))  # (B, S) indices into seeds
    rows = []
    for fraction, condition in sorted(acc, key=lambda k: (k[0], k[1])):
        if condition == BASELINE:
            continue
        estimate = _equivalent(acc, real, fractions, fraction, condition, seeds)
        boots = [_equivalent(acc, real, fractions, fraction, condition, [seeds[i] for i in row])[0] for row in draws]
        finite = np.array([b for b in boots if b is not None], dtype=float)
        lo, hi = (float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))) \
            if len(finite) >= 0.95 * n_boot else (None, None)  # too many draws fall off the curve for an interval
        n_eq, beyond = estimate
        rows.append({"fraction": fraction, "condition": condition, "real_images": real[fraction],
                     "equivalent_real_images": n_eq, "beyond": beyond,
                     "worth_real_images": None if n_eq is None else n_eq - real[fraction],
                     "lo": None if lo is None else lo - real[fraction], "hi": None if hi is None else hi - real[fraction],
                     "n_runs": len(seeds)})
    return rows


def _equivalent(acc: dict, real: dict, fractions: list[float], fraction: float, condition: str,
                seeds: Sequence[int]) -> tuple[float | None, str | None]:
    curve = [(real[f], float(np.mean([acc[(f, BASELINE)][s] for s in seeds]))) for f in fractions]
    return equivalent_real_images(curve, float(np.mean([acc[(fraction, condition)][s] for s in seeds])))
