"""Each condition against real-only: pairing, the test of record, Holm, intervals, power.

A condition's trials are paired with the real-only trials of the same seed and fold, on the same test
images, and tested with `stats.run_patient_test` (runs x patients; see study/stats.py for why). A comparison
that cannot be made says why in `verdict` and `reason` instead of reading "no detectable difference":

    "incomplete"     a trial of the condition or of real-only has no test predictions (predictions.csv)
    "not compared"   real-only has no finished trial, so there is nothing to pair with
    "not testable"   one run per condition, or a difference with no spread at all between runs and patients:
                     the error of Δ, hence any p, cannot be estimated
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mrisynth.study import stats
from mrisynth.study.names import BASELINE

INCOMPLETE, NOT_COMPARED, NOT_TESTABLE = "incomplete", "not compared", "not testable"


def cluster_labels(ids: list[str], patient_of: dict[str, str]) -> tuple[list[str], str]:
    """The cluster of each test image (its patient; the image itself where no patient ID is known) and the
    unit in words for the report."""
    known = sum(1 for i in ids if patient_of.get(i))
    labels = [f"patient:{patient_of[i]}" if patient_of.get(i) else f"image:{i}" for i in ids]
    if known == len(ids):
        return labels, "patient"
    if known == 0:
        return labels, "image (no patient IDs)"
    return labels, f"patient ({len(ids) - known} image(s) without a patient ID counted alone)"


def paired_arrays(baseline: list[dict], group: list[dict]) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """Correctness of real-only (a) and of the condition (b) as (S, N) arrays over the seeds present in both.

    Per seed, the test images of all its folds side by side (each real image appears once per seed); a seed
    missing a fold is left out, so every row covers the same images.
    """
    base = {(t["seed"], t["fold"]): t["test_correct"] for t in baseline}
    per_seed: dict[int, tuple[dict, dict]] = defaultdict(lambda: ({}, {}))
    for t in group:
        key = (t["seed"], t["fold"])
        if key in base:
            ids = set(base[key]) & set(t["test_correct"])
            per_seed[t["seed"]][0].update({i: base[key][i] for i in ids})
            per_seed[t["seed"]][1].update({i: t["test_correct"][i] for i in ids})
    if not per_seed:
        return np.zeros((0, 0), bool), np.zeros((0, 0), bool), [], []
    size = max(len(a) for a, _ in per_seed.values())
    seeds = [s for s in sorted(per_seed) if len(per_seed[s][0]) == size]
    ids = sorted(set.intersection(*(set(per_seed[s][0]) for s in seeds)))
    a = np.array([[per_seed[s][0][i] for i in ids] for s in seeds], dtype=bool)
    b = np.array([[per_seed[s][1][i] for i in ids] for s in seeds], dtype=bool)
    return a, b, seeds, ids


def compare(baseline: list[dict], group: list[dict], *, n_boot: int, seed: int,
            patient_of: dict[str, str] | None = None) -> dict:
    """Condition (group) minus real-only (baseline): the test of record and the secondary figures.

    diff > 0 means the condition is more accurate. p is uncorrected; `apply_holm` adds p_holm, the verdict,
    its interval and the minimum detectable difference.
    """
    if not baseline:
        return {"verdict": NOT_COMPARED, "reason": f"real-only ({BASELINE}) has no finished trial to pair with"}
    missing = sorted(t["trial"] for t in baseline + group if t.get("missing"))
    if missing:
        return {"verdict": INCOMPLETE, "reason": "no test predictions (predictions.csv) for " + ", ".join(missing)}
    a, b, seeds, ids = paired_arrays(baseline, group)
    if not ids:
        return {"verdict": NOT_COMPARED, "reason": f"no trial shares a seed, fold and test images with {BASELINE}"}
    labels, unit = cluster_labels(ids, patient_of or {})
    test = stats.run_patient_test(a, b, labels)
    boot = stats.paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    secondary = {"p_per_image_sign_flip": stats.sign_flip_test(a, b, n_perm=n_boot, seed=seed)["p"],
                 "p_bootstrap": boot["p"], "bootstrap_lo": boot["lo"], "bootstrap_hi": boot["hi"],
                 "mcnemar_per_seed": [{"seed": s, **stats.mcnemar(a[i], b[i])} for i, s in enumerate(seeds)]}
    out = {**test, "test": "runs x patients t (crossed, Satterthwaite df)", "cluster_unit": unit,
           "n_images": len(ids), "seeds": seeds, "secondary": secondary}
    if test["p"] is None and test["n_runs"] < 2:
        out.update(verdict=NOT_TESTABLE, reason="one run per condition: the run-to-run spread is unknown")
    elif test["p"] is None:
        out.update(verdict=NOT_TESTABLE, reason="every run and every test patient moved by the same amount, so "
                   "the error of Δ cannot be estimated (too few runs or patients)")
    return out


def apply_holm(conditions: list[dict], *, alpha: float) -> None:
    """Holm across the testable comparisons; each gets p_holm, its verdict, the interval at the level Holm
    tested it (so the interval excludes 0 exactly when the verdict is helps/hurts) and the minimum
    detectable difference (80% power at alpha / m, the strictest Holm step)."""
    tested = [c["comparison"] for c in conditions if (c.get("comparison") or {}).get("p") is not None]
    adjusted, levels = stats.holm_levels([c["p"] for c in tested], alpha=alpha)
    for comp, p_holm, level in zip(tested, adjusted, levels):
        comp["p_holm"], comp["level"] = p_holm, level
        comp["lo"], comp["hi"] = stats.t_interval_at(comp["diff"], comp["se"], comp["df"], level)
        comp["verdict"] = stats.verdict(comp["diff"], p_holm, alpha=alpha)
        comp["mdd"] = stats.min_detectable(comp["se"], comp["df"], alpha=alpha / len(tested))


def power_warnings(conditions: list[dict], *, min_patients: int = 15, min_runs: int = 3) -> list[str]:
    """Warnings a reader needs before trusting a "no detectable difference": too few patients or runs."""
    notes = []
    comps = [c["comparison"] for c in conditions if (c.get("comparison") or {}).get("n_clusters")]
    if comps:
        fewest = min(comps, key=lambda c: c["n_clusters"])
        if fewest["cluster_unit"] == "patient" and fewest["n_clusters"] < min_patients:
            notes.append(f"The test set has only {fewest['n_clusters']} patients (fewer than {min_patients}): "
                         "differences between conditions are measured on very few independent cases.")
        if not fewest["cluster_unit"].startswith("patient"):
            notes.append("The data have no patient IDs, so each test image counts as independent: if several "
                         "slices come from one patient, the verdicts are over-confident.")
    runs = [c["n_trials"] for c in conditions if c["n_trials"]]
    if runs and min(runs) < min_runs:
        notes.append(f"Fewer than {min_runs} runs per condition (fewest: {min(runs)}): the run-to-run spread is "
                     "barely estimated, so only very large differences can be detected (see the minimum "
                     "detectable difference beside each verdict).")
    return notes
