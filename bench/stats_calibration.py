"""Calibration of the study's test of record: false positives in null studies and power for true effects.

    python bench/stats_calibration.py                 # full grid, 1000 simulated studies per scenario
    python bench/stats_calibration.py --sims 200 --quick

A simulated study: one test set of N slices from N / 6 patients; S training runs of the real-only recipe and
S of the condition, paired by run. Run r's model gets image i right with probability
sigmoid(base + image_i + patient_p + run_r + run_patient_rp (+ shift for a true effect)), where image_i and
patient_p are fixed difficulties of the test set (hard slices, hard patients: every model shares them),
run_r is the run's own luck (its SD is the "run SD" in accuracy points) and run_patient_rp makes a run get a
whole patient right or wrong together ("clustering": none / moderate / strong). Each study draws a new test
set. In a null study both recipes are the same, so any verdict is a false positive.

Printed per scenario: the rate of p < 0.05 with its Monte-Carlo standard error, for
    old   the former test of record: per-image sign-flip on seed-averaged differences
    runs  a paired t-test across runs only (patients ignored)
    new   stats.run_patient_test's crossed runs x patients t-test (the test of record)
and the power of the new test for true effects of 1, 2 and 5 accuracy points.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
from scipy import optimize

from mrisynth.study import stats

SLICES_PER_PATIENT = 6
BASE_ACCURACY = 0.85
IMAGE_SD = 1.0  # fixed per-slice difficulty on the logit scale
CLUSTERING = {"none": (0.0, 0.0), "moderate": (1.0, 1.0), "strong": (2.0, 2.5)}  # (patient SD, run x patient SD)
ALPHA = 0.05
HETERO_SD = 1.0  # logit SD of a patient-specific effect in the "helps some, hurts others" null


def _logit_sd(points: float) -> float:
    """Run SD in accuracy points -> SD on the logit scale (slope of the logistic at the base accuracy)."""
    return points / 100 / (BASE_ACCURACY * (1 - BASE_ACCURACY))


def simulate(rng: np.random.Generator, *, sims: int, runs: int, slices: int, clustering: str, run_sd: float,
             shift: float = 0.0, effect_sd: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correctness of both recipes: a, b (sims, runs, slices) float 0/1, and the patient of each slice (slices,).

    `effect_sd` (logit scale) gives the condition a patient-specific effect: it helps some patients and hurts
    others (with `shift` from `shift_for` the average over the patient population is then still `points`)."""
    patients = max(1, slices // SLICES_PER_PATIENT)
    patient_of = np.arange(slices) % patients
    pat_sd, inter_sd = CLUSTERING[clustering]
    fixed = (math.log(BASE_ACCURACY / (1 - BASE_ACCURACY)) + IMAGE_SD * rng.standard_normal((sims, 1, slices))
             + pat_sd * rng.standard_normal((sims, 1, patients))[..., patient_of])  # (sims, 1, slices)

    def one_recipe(offset: float | np.ndarray) -> np.ndarray:
        eta = (fixed + offset + _logit_sd(run_sd) * rng.standard_normal((sims, runs, 1))
               + inter_sd * rng.standard_normal((sims, runs, patients))[..., patient_of])
        return (rng.random(eta.shape) < 1 / (1 + np.exp(-eta))).astype(float)

    effect = shift + effect_sd * rng.standard_normal((sims, 1, patients))[..., patient_of]
    return one_recipe(0.0), one_recipe(effect), patient_of


def old_sign_flip_p(a: np.ndarray, b: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """The former test of record for many studies at once: per-image sign-flip of seed-averaged differences."""
    per_image = (b - a).mean(axis=1)  # (sims, N)
    observed = per_image.mean(axis=1)  # (sims,)
    null = per_image @ signs.T / per_image.shape[1]  # (sims, P)
    extreme = (np.abs(null) >= np.abs(observed)[:, None] - 1e-12).sum(axis=1)
    p = (1 + extreme) / (1 + signs.shape[0])
    return np.where(np.any(per_image != 0, axis=1), p, 1.0)


def runs_only_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Paired t-test across runs of each run's accuracy difference."""
    d = (b - a).mean(axis=2)  # (sims, S)
    return stats.t_p_value(d.mean(1), d.var(1, ddof=1) / d.shape[1], np.full(len(d), d.shape[1] - 1.0))


def new_p(a: np.ndarray, b: np.ndarray, patient_of: np.ndarray) -> np.ndarray:
    """The test of record (stats.crossed_variance on patient totals) for many studies at once."""
    diffs = b - a  # (sims, S, N)
    patients = patient_of.max() + 1
    totals = np.zeros(diffs.shape[:2] + (patients,))
    np.add.at(totals.transpose(2, 0, 1), patient_of, diffs.transpose(2, 0, 1))
    c = stats.crossed_variance(totals, np.bincount(patient_of).astype(float))
    return stats.t_p_value(c["diff"], c["var"], c["df"])


def shift_for(points: float, *, clustering: str, run_sd: float, rng: np.random.Generator,
              effect_sd: float = 0.0) -> float:
    """The logit shift that raises expected accuracy by `points` over the patient population (solved on a
    large draw of the same model, the patient-specific effect included)."""
    pat_sd, inter_sd = CLUSTERING[clustering]
    sd = math.sqrt(IMAGE_SD**2 + pat_sd**2 + inter_sd**2 + _logit_sd(run_sd) ** 2)
    eta = math.log(BASE_ACCURACY / (1 - BASE_ACCURACY)) + sd * rng.standard_normal(400_000)
    effect = effect_sd * rng.standard_normal(len(eta))
    base = np.mean(1 / (1 + np.exp(-eta)))
    return float(optimize.brentq(lambda s: np.mean(1 / (1 + np.exp(-eta - effect - s))) - base - points / 100, -5, 5))


def rates(rng: np.random.Generator, signs: np.ndarray, *, sims: int, chunk: int, **scenario) -> dict:
    """Rejection rates (p < ALPHA) of the three tests, and the mean SD of run accuracy, over `sims` studies."""
    hits = {"old": 0, "runs": 0, "new": 0}
    sd_sum = 0.0
    for start in range(0, sims, chunk):
        a, b, patient_of = simulate(rng, sims=min(chunk, sims - start), **scenario)
        hits["old"] += int((old_sign_flip_p(a, b, signs[:, :a.shape[2]]) < ALPHA).sum())
        hits["runs"] += int((runs_only_p(a, b) < ALPHA).sum())
        hits["new"] += int((new_p(a, b, patient_of) < ALPHA).sum())
        sd_sum += float(a.mean(axis=2).std(axis=1, ddof=1).sum())
    return {k: v / sims for k, v in hits.items()} | {"measured_sd": 100 * sd_sum / sims}


def _pct(rate: float, sims: int) -> str:
    return f"{100 * rate:.1f} ± {100 * math.sqrt(max(rate * (1 - rate), 1e-12) / sims):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=1000, help="simulated studies per scenario")
    parser.add_argument("--perms", type=int, default=500, help="sign flips of the old per-image test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smaller grid (runs 3/10, 30/600 slices)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    run_counts, sizes = ((3, 10), (30, 600)) if args.quick else ((3, 5, 10), (30, 150, 600))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(args.perms, max(sizes)))
    chunk = 200
    started = time.perf_counter()
    print(f"## False positives in null studies (identical recipes), % of {args.sims} studies ± MC s.e.\n")
    print("| runs | slices | patients | clustering | run SD (pts) | measured SD (pts) | old per-image | runs-only t "
          "| new runs x patients |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = {"old": 0.0, "runs": 0.0, "new": 0.0}
    for runs, slices, clustering, run_sd in itertools.product(run_counts, sizes, CLUSTERING, (0.0, 2.0, 5.0)):
        r = rates(rng, signs, sims=args.sims, chunk=chunk, runs=runs, slices=slices, clustering=clustering,
                  run_sd=run_sd)
        worst = {k: max(worst[k], r[k]) for k in worst}
        print(f"| {runs} | {slices} | {slices // SLICES_PER_PATIENT} | {clustering} | {run_sd:g} | "
              f"{r['measured_sd']:.1f} | {_pct(r['old'], args.sims)} | {_pct(r['runs'], args.sims)} | "
              f"{_pct(r['new'], args.sims)} |")
    print(f"\nWorst false-positive rate over the grid: old {100 * worst['old']:.1f}%, runs-only "
          f"{100 * worst['runs']:.1f}%, new {100 * worst['new']:.1f}% (target 5% + 2 MC s.e. "
          f"= {100 * (ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / args.sims)):.1f}%)\n")
    print("## Null on average, but the condition helps some patients and hurts others (moderate clustering, "
          f"run SD 2, patient effect SD {HETERO_SD} logit), % of {args.sims}\n")
    print("| runs | slices | patients | old per-image | runs-only t | new runs x patients |")
    print("|---|---|---|---|---|---|")
    for runs, slices in itertools.product(run_counts, sizes):
        shift = shift_for(0.0, clustering="moderate", run_sd=2.0, rng=rng, effect_sd=HETERO_SD)
        r = rates(rng, signs, sims=args.sims, chunk=chunk, runs=runs, slices=slices, clustering="moderate",
                  run_sd=2.0, shift=shift, effect_sd=HETERO_SD)
        print(f"| {runs} | {slices} | {slices // SLICES_PER_PATIENT} | {_pct(r['old'], args.sims)} | "
              f"{_pct(r['runs'], args.sims)} | {_pct(r['new'], args.sims)} |")
    print()
    print(f"## Power of the new test (p < {ALPHA}), run SD 2 points, moderate clustering, % of {args.sims}\n")
    print("| runs | slices | patients | +1 pt | +2 pts | +5 pts |")
    print("|---|---|---|---|---|---|")
    for runs, slices in itertools.product(run_counts, sizes):
        cells = []
        for points in (1.0, 2.0, 5.0):
            shift = shift_for(points, clustering="moderate", run_sd=2.0, rng=rng)
            r = rates(rng, signs, sims=args.sims, chunk=chunk, runs=runs, slices=slices, clustering="moderate",
                      run_sd=2.0, shift=shift)
            cells.append(_pct(r["new"], args.sims))
        print(f"| {runs} | {slices} | {slices // SLICES_PER_PATIENT} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
