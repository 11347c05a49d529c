"""Statistics for comparing conditions: the test of record, its intervals and power, and secondary figures.

Unit of inference. The question is "does this recipe (real + synthetic at ratio r) train better classifiers
than real-only, for patients like these?", so two things vary in the real world and both must be in the
error of a difference: the training run (classifier seed; seed x fold under cross-validation) and the
patient (slices of one patient are near-duplicates, so a patient, not a slice, is one observation). The test
of record, `run_patient_test`, treats per-image differences (condition - real-only, paired by seed and fold,
on the same test images) as a crossed runs x patients design and estimates the variance of their mean as

    var = V_run + max(0, V_patient - V_interaction)

V_run is the spread of the per-run mean differences (it already holds the run x patient interaction);
V_patient the cluster-robust spread of the seed-averaged patient totals (it holds the interaction again, so
V_interaction is subtracted: the crossed random-effects ANOVA estimator). The statistic diff / sqrt(var) is
referred to a t distribution with Satterthwaite degrees of freedom (S - 1 when the patient term is zero).
Where the data have no patient IDs, each image is its own cluster (the report says so).

Why this and not the alternatives (measured with bench/stats_calibration.py, BENCHMARKS.md):
- the former test of record, a per-image sign-flip test on seed-averaged differences, ignores run-to-run
  variation and patient clustering: 10-60% false "helps/hurts" in null studies (identical recipes) once the
  seed-to-seed SD is a few points or slices cluster by patient (worst 60.1% of 1000 studies);
- a paired t-test across runs alone holds in those null studies (worst 7.0%) but not when the condition
  helps some patients and hurts others with no effect on average: 14-22% with 10 runs (this test: <= 6.3%);
- permutation over runs cannot reach p < 0.05 with 3-5 runs (2^3 sign patterns: smallest two-sided p 0.25);
- flipping signs per patient within a run breaks the run's common effect (anti-conservative when the
  seed-to-seed SD is large); a bootstrap over 3 runs underestimates their spread by (S - 1) / S and ignores
  the t quantile;
- a mixed model (statsmodels MixedLM, crossed run and patient variance components) estimates the same
  components ~9000x more slowly (193 ms vs 0.02 ms a study, 3 runs x 150 slices) and warned of
  non-convergence or a boundary fit in 18 of 20 null studies.
The crossed t-test keeps the false-positive rate near 5% in every one of 81 simulated null scenarios (worst
6.5% of 1000 studies; 5.3% of 8000 rerun in that scenario); its price is low power with 3 runs (a 5-point
gain on 600 slices is found 30% of the time), which the report states as the minimum detectable difference
(80% power) beside every "no detectable difference".

Multiplicity. Comparisons with real-only are Holm-corrected. The interval beside a verdict is the t interval
at level 1 - alpha * p / p_holm, the level at which Holm tested that comparison, so it excludes 0 exactly
when the verdict is "helps" or "hurts" (`holm_levels`).

Secondary figures (summary.json only): McNemar per seed, the per-image sign-flip p, a paired bootstrap
interval over images. Everything random is seeded (`numpy.random.default_rng(seed)`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sstats

EXACT_BELOW = 25  # McNemar: exact binomial test when the discordant pairs are fewer than this
POWER = 0.8  # the power at which the minimum detectable difference is stated
HELPS, HURTS, NO_DIFFERENCE = "helps", "hurts", "no detectable difference"  # the verdicts


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
    """A plain reading of one comparison against real-only: the sign of diff (condition - real-only) and the
    Holm-corrected p decide."""
    if p_adjusted < alpha and diff > 0:
        return HELPS
    if p_adjusted < alpha and diff < 0:
        return HURTS
    return NO_DIFFERENCE


def cluster_totals(diffs: np.ndarray, clusters: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per-run, per-cluster sums of per-image differences: diffs (S, N), clusters (N,) labels ->
    totals (S, P) and cluster sizes (P,), clusters in sorted label order."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))  # (S, N)
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    totals = np.zeros((d.shape[0], len(labels)))
    np.add.at(totals.T, index, d.T)
    return totals, np.bincount(index, minlength=len(labels)).astype(float)


def crossed_variance(totals: np.ndarray, sizes: np.ndarray) -> dict:
    """Mean per-image difference and its variance under a crossed runs x patients design (module docstring).

    totals (..., S, P): per run, per patient sum of differences; sizes (P,): images per patient. Leading axes
    are independent studies (the calibration benchmark passes thousands at once). Returns arrays over them:
    diff, var, df and the components var_run, var_patient, var_interaction.
    """
    y = np.asarray(totals, dtype=float)
    n = np.asarray(sizes, dtype=float)
    s, p = y.shape[-2:]
    total_n = n.sum()
    run_mean = y.sum(-1) / total_n  # (..., S) each run's mean difference per image
    diff = run_mean.mean(-1)  # (...)
    patient = y.mean(-2)  # (..., P) seed-averaged patient totals
    v_run = run_mean.var(-1, ddof=1) / s if s > 1 else np.full(diff.shape, np.nan)
    if p > 1 and s > 1:
        v_pat = p / (p - 1) * ((patient - n * diff[..., None]) ** 2).sum(-1) / total_n**2
        resid = y - n * run_mean[..., :, None] - patient[..., None, :] + n * diff[..., None, None]
        v_int = p / (p - 1) * (resid**2).sum((-2, -1)) / ((s - 1) * s * total_n**2)
    else:  # one cluster: no patient spread to estimate; one run: nothing is estimable
        v_pat = v_int = np.zeros(diff.shape)
    extra = np.maximum(v_pat - v_int, 0.0)
    var = v_run + extra
    # Satterthwaite: each component's squared weight over its degrees of freedom; the patient terms only
    # count when they add to the variance.
    with np.errstate(divide="ignore", invalid="ignore"):
        den = v_run**2 / max(s - 1, 1) + np.where(
            extra > 0, v_pat**2 / max(p - 1, 1) + v_int**2 / max((s - 1) * (p - 1), 1), 0.0)
        df = np.where(den > 0, var**2 / den, max(s - 1, 1))
    return {"diff": diff, "var": var, "df": np.maximum(df, 1.0), "var_run": v_run, "var_patient": v_pat,
            "var_interaction": v_int}


def t_p_value(diff: np.ndarray, var: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p of diff / sqrt(var) against t(df); 1 where the variance is 0 (no spread observed: no
    evidence either way; `run_patient_test` then gives no p at all)."""
    diff, var = np.asarray(diff, dtype=float), np.asarray(var, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(diff) / np.sqrt(var)
    return np.where(var > 0, 2 * sstats.t.sf(t, df), 1.0)


def run_patient_test(correct_a: np.ndarray, correct_b: np.ndarray, clusters: Sequence) -> dict:
    """The test of record: b - a over S paired runs (S, N) on the same N test images clustered by patient.

    Needs S >= 2 runs (with one run the run-to-run spread is unknown and p is None). p is None too when a
    difference shows no spread at all between runs and patients (2 runs x 3 patients that all moved alike):
    its error cannot be estimated, and a zero error would claim certainty. diff is a fraction (0.01 = 1
    point); se its standard error; df the Satterthwaite degrees of freedom.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))  # (S, N)
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape or a.shape[1] != len(clusters):
        raise ValueError(f"paired arrays and clusters differ in shape: {a.shape}, {b.shape}, {len(clusters)}")
    totals, sizes = cluster_totals(b - a, clusters)
    out = {"diff": float((b - a).mean()), "n_runs": a.shape[0], "n_clusters": len(sizes),
           "run_diffs": (b - a).mean(axis=1).tolist()}
    if a.shape[0] < 2:
        return {**out, "se": None, "df": None, "p": None}
    c = crossed_variance(totals, sizes)
    if c["var"] <= 0 and out["diff"] != 0:
        return {**out, "se": None, "df": None, "p": None}
    p = float(t_p_value(c["diff"], c["var"], c["df"]))
    return {**out, "se": float(np.sqrt(c["var"])), "df": float(c["df"]), "p": p,
            **{k: float(c[k]) for k in ("var_run", "var_patient", "var_interaction")}}


def holm_levels(p_values: Sequence[float], *, alpha: float) -> tuple[list[float], list[float]]:
    """Holm-adjusted p-values and, per comparison, the level alpha * p / p_holm it was tested at.

    A t interval at confidence 1 - level excludes 0 exactly when p < level, i.e. when p_holm < alpha, so
    intervals drawn at these levels agree with the Holm verdicts.
    """
    adjusted = holm(p_values)
    m = max(len(adjusted), 1)
    levels = [alpha * p / q if q > 0 else alpha / m for p, q in zip(p_values, adjusted)]
    return adjusted, levels


def t_interval_at(diff: float, se: float, df: float, level: float) -> tuple[float, float]:
    """diff -/+ t(1 - level/2, df) * se: the interval matching a t-test at significance `level`."""
    half = float(sstats.t.ppf(1 - level / 2, df)) * se
    return diff - half, diff + half


def min_detectable(se: float, df: float, *, alpha: float, power: float = POWER) -> float:
    """The smallest true difference the test detects with probability `power` at two-sided level `alpha`
    (same standard error and degrees of freedom as observed)."""
    return float((sstats.t.ppf(1 - alpha / 2, df) + sstats.t.ppf(power, df)) * se)
