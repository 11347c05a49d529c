"""Statistics against known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrisynth.study import stats


def test_t_interval_matches_the_textbook_formula():
    ci = stats.t_interval([0.90, 0.92, 0.94])
    # mean 0.92, sd 0.02, t(0.975, 2) = 4.3027 -> half width 4.3027 * 0.02 / sqrt(3) = 0.04968
    assert ci["mean"] == pytest.approx(0.92)
    assert ci["hi"] - ci["mean"] == pytest.approx(0.049683, abs=1e-5)
    clipped = stats.t_interval([0.9, 1.0, 1.0], bounds=(0.0, 1.0))
    assert clipped["hi"] == 1.0 and clipped["lo"] < clipped["mean"]
    single = stats.t_interval([0.9])
    assert single["mean"] == 0.9 and math.isnan(single["lo"])


def test_identical_predictions_show_no_difference():
    correct = np.random.default_rng(0).random((3, 200)) < 0.8
    boot = stats.paired_bootstrap(correct, correct.copy(), n_boot=500)
    test = stats.sign_flip_test(correct, correct.copy(), n_perm=500)
    mc = stats.mcnemar(correct[0], correct[0].copy())
    assert boot["diff"] == 0 and boot["p"] == 1.0
    assert test["p"] == 1.0 and mc["p"] == 1.0
    assert stats.verdict(boot["diff"], test["p"]) == "no detectable difference"


def test_a_clearly_better_condition_helps_and_a_worse_one_hurts():
    rng = np.random.default_rng(1)
    base = rng.random((2, 300)) < 0.7
    better = base | (rng.random((2, 300)) < 0.5)  # fixes about half the errors, breaks nothing
    boot = stats.paired_bootstrap(base, better, n_boot=1000, seed=3)
    test = stats.sign_flip_test(base, better, n_perm=1000, seed=3)
    mc = stats.mcnemar(base[0], better[0])
    assert boot["diff"] > 0.1 and boot["lo"] > 0 and boot["p"] < 0.01
    assert test["p"] == pytest.approx(1 / 1001)  # no random swap comes close: the smallest p it can give
    assert mc["p"] < 1e-6 and mc["only_a"] == 0
    assert stats.verdict(boot["diff"], test["p"]) == "helps"
    assert stats.verdict(-boot["diff"], stats.sign_flip_test(better, base, n_perm=1000)["p"]) == "hurts"


def test_mcnemar_uses_the_exact_binomial_for_few_discordant_pairs():
    a = np.array([True] * 10 + [False] * 0 + [True] * 90)
    b = a.copy()
    b[:4] = False  # 4 discordant pairs, all against b: exact two-sided p = 2 * 0.5**4 = 0.125
    result = stats.mcnemar(a, b)
    assert result["method"] == "exact binomial"
    assert result["p"] == pytest.approx(0.125)


def test_bootstrap_is_seeded():
    correct = np.random.default_rng(2).random(100) < 0.6
    assert stats.bootstrap_ci(correct, seed=5) == stats.bootstrap_ci(correct, seed=5)
    ci = stats.bootstrap_ci(correct, seed=5)
    assert ci["lo"] < ci["accuracy"] < ci["hi"]


def test_holm_adjusts_in_step_down_order():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_repeating_seeds_with_identical_predictions_does_not_shrink_p():
    # Seeds share the test images: copies of one seed add no evidence, so the test of record must not
    # grow more confident (McNemar with pairs summed over 5 copies went from p=0.18 to p=0.0005 here).
    base = np.arange(200) % 10 < 7  # 140 of 200 right
    other = base.copy()
    other[np.flatnonzero(~base)[:10]] = True  # 10 fixes against 4 new errors: a weak effect
    other[np.flatnonzero(base)[:4]] = False
    one = stats.sign_flip_test(base, other, n_perm=2000, seed=1)
    five = stats.sign_flip_test(np.tile(base, (5, 1)), np.tile(other, (5, 1)), n_perm=2000, seed=1)
    assert five["p"] >= one["p"] - 1e-12 and five["diff"] == pytest.approx(one["diff"])
    assert 0.01 < one["p"] < 0.9


def test_sign_flip_matches_the_exact_sign_test_for_one_seed():
    a = np.array([True] * 100)
    b = a.copy()
    b[:6] = False  # 6 discordant pairs, all against b: exact two-sided p = 2 * 0.5**6 = 0.03125
    p = stats.sign_flip_test(a, b, n_perm=20000, seed=0)["p"]
    assert p == pytest.approx(0.03125, abs=0.006)


def test_mcnemar_refuses_stacked_seeds():
    with pytest.raises(ValueError, match="one seed"):
        stats.mcnemar(np.ones((2, 10), bool), np.ones((2, 10), bool))


# --- the test of record: runs x patients ------------------------------------------------------------------

def _demo_like() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`mrisynth demo`'s case: 36 test slices of 6 patients, 3 runs whose differences are -3, +9, +11 slices."""
    a, b = np.ones((3, 36), bool), np.ones((3, 36), bool)
    b[0, :3] = False  # run 0: the condition gets 3 more slices wrong (-8.3 points)
    a[1, :9] = False  # run 1: +25.0 points
    a[2, :11] = False  # run 2: +30.6 points
    return a, b, np.repeat(np.arange(6), 6)


def test_the_demo_like_case_reads_no_detectable_difference():
    a, b, patients = _demo_like()
    result = stats.run_patient_test(a, b, patients)
    assert [round(100 * d, 1) for d in result["run_diffs"]] == [-8.3, 25.0, 30.6]
    assert result["diff"] == pytest.approx(0.1574, abs=1e-4)
    assert result["p"] == pytest.approx(0.343, abs=0.001)  # the old per-image test gave Holm p 0.006 here
    adjusted, _ = stats.holm_levels([result["p"], 0.5, 0.9], alpha=0.05)
    assert stats.verdict(result["diff"], adjusted[0]) == "no detectable difference"
    # and the study says what it could have detected: about 65 points, i.e. nothing realistic
    assert stats.min_detectable(result["se"], result["df"], alpha=0.05) == pytest.approx(0.646, abs=0.002)


def test_identical_runs_give_no_difference_and_p_one():
    correct = np.random.default_rng(3).random((4, 60)) < 0.8
    result = stats.run_patient_test(correct, correct.copy(), np.arange(60) // 6)
    assert result["diff"] == 0 and result["p"] == 1.0
    assert stats.verdict(result["diff"], result["p"]) == "no detectable difference"


def test_a_large_consistent_effect_helps_and_its_mirror_hurts():
    rng = np.random.default_rng(4)
    base = rng.random((5, 300)) < 0.7
    better = base | (rng.random((5, 300)) < 0.5)  # every run fixes about half its errors
    patients = np.arange(300) // 6
    up = stats.run_patient_test(base, better, patients)
    down = stats.run_patient_test(better, base, patients)
    assert up["diff"] > 0.1 and up["p"] < 0.001 and stats.verdict(up["diff"], up["p"]) == "helps"
    assert down["diff"] == pytest.approx(-up["diff"]) and stats.verdict(down["diff"], down["p"]) == "hurts"


def test_one_patients_change_is_one_observation_not_five():
    # Every run fixes the 5 slices of patient 0 and nothing else: the runs agree perfectly, so a test over
    # runs alone would be certain; over patients it is one patient of ten: t = 1 on 9 df.
    a = np.zeros((3, 50), bool)
    b = a.copy()
    b[:, :5] = True
    result = stats.run_patient_test(a, b, np.repeat(np.arange(10), 5))
    assert result["diff"] == pytest.approx(0.1) and result["se"] == pytest.approx(0.1)
    assert result["df"] == pytest.approx(9.0) and result["p"] == pytest.approx(0.34344, abs=1e-5)


def test_without_patient_spread_it_is_the_paired_t_test_across_runs():
    from scipy import stats as sstats

    # Each run moves the same number of slices in every patient: all the spread is between runs.
    a = np.zeros((4, 40), bool)
    b = a.copy()
    for run, k in enumerate((1, 2, 2, 4)):  # slices fixed per patient of 10 slices
        for p in range(4):
            b[run, p * 10:p * 10 + k] = True
    result = stats.run_patient_test(a, b, np.repeat(np.arange(4), 10))
    expected = sstats.ttest_1samp([0.1, 0.2, 0.2, 0.4], 0.0)
    assert result["df"] == pytest.approx(3.0) and result["p"] == pytest.approx(expected.pvalue)


def test_crossed_variance_matches_the_two_way_anova_estimator():
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(5)
    s, p = 4, 12
    y = rng.normal(size=(s, 1)) + rng.normal(size=(1, p)) * 1.5 + rng.normal(size=(s, p))  # one value per cell
    frame = pd.DataFrame({"y": y.ravel(), "run": np.repeat(np.arange(s), p), "pat": np.tile(np.arange(p), s)})
    table = anova_lm(ols("y ~ C(run) + C(pat)", frame).fit())
    ms_run, ms_pat, ms_err = table["mean_sq"]
    c = stats.crossed_variance(y, np.ones(p))
    assert float(c["diff"]) == pytest.approx(y.mean())
    assert float(c["var"]) == pytest.approx((ms_run + max(ms_pat - ms_err, 0)) / (s * p))


def test_one_run_per_condition_is_not_testable():
    correct = np.random.default_rng(6).random((1, 30)) < 0.7
    result = stats.run_patient_test(correct, ~correct, np.arange(30))
    assert result["p"] is None and result["se"] is None and result["n_runs"] == 1


def test_min_detectable_difference_by_formula():
    # (t(0.975, 10) + t(0.8, 10)) * se = (2.2281 + 0.8791) * 0.01
    assert stats.min_detectable(0.01, 10, alpha=0.05) == pytest.approx(0.031072, abs=1e-5)


def test_intervals_beside_verdicts_agree_with_them_over_many_random_studies():
    rng = np.random.default_rng(7)
    checked = {"helps": 0, "hurts": 0, "no detectable difference": 0}
    for _ in range(300):
        m, runs, n = int(rng.integers(1, 6)), int(rng.integers(2, 8)), int(rng.integers(12, 120))
        patients = rng.integers(0, max(2, n // int(rng.integers(1, 8))), n)
        base = rng.random((runs, n)) < 0.7
        results = [stats.run_patient_test(base, rng.random((runs, n)) < 0.7 + rng.normal(0, 0.12), patients)
                   for _ in range(m)]
        results = [r for r in results if r["p"] is not None and r["se"] > 0]
        adjusted, levels = stats.holm_levels([r["p"] for r in results], alpha=0.05)
        for r, p_holm, level in zip(results, adjusted, levels):
            lo, hi = stats.t_interval_at(r["diff"], r["se"], r["df"], level)
            word = stats.verdict(r["diff"], p_holm)
            checked[word] += 1
            assert (word == "helps") == (lo > 0) and (word == "hurts") == (hi < 0), (word, lo, hi, p_holm)
    assert min(checked.values()) > 20  # every verdict was exercised


def test_a_difference_without_any_spread_is_not_claimed_with_certainty():
    # 2 runs x 3 patients, every patient gains one slice in both runs: the observed spread is 0, which
    # would give p = 0 and "helps" from six numbers.
    a = np.zeros((2, 9), bool)
    b = a.copy()
    b[:, [0, 3, 6]] = True
    result = stats.run_patient_test(a, b, np.repeat(np.arange(3), 3))
    assert result["diff"] == pytest.approx(1 / 3) and result["p"] is None
