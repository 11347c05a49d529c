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
