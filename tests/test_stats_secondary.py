"""Secondary statistics a report prints beside the test of record: the paired bootstrap and McNemar's test.

Expected values are worked out by hand (binomial sums, chi-square with Yates' correction, a normal
approximation) rather than by the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from mrisynth.study.stats import mcnemar, paired_bootstrap


def _paired(only_a: int, only_b: int, both: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two classifiers: `only_a` images only a gets right, `only_b` only b, ..."""
    a = np.array([True] * only_a + [False] * only_b + [True] * both + [False] * neither)
    b = np.array([False] * only_a + [True] * only_b + [True] * both + [False] * neither)
    return a, b


def test_paired_bootstrap_p_is_two_sided():
    # 200 images: b alone right on 30, a alone on 14. Difference 16/200 = 0.08, per-image variance
    # 44/200 - 0.08^2 = 0.2136, standard error sqrt(0.2136 / 200) = 0.0327, z = 2.45:
    # two-sided p ~ 2 * Phi(-2.45) = 0.0144 (a one-sided p would be about 0.007).
    a, b = _paired(14, 30, both=76, neither=80)
    forward = paired_bootstrap(a, b, n_boot=20000, seed=0)
    assert forward["diff"] == pytest.approx(0.08)
    assert 0.010 < forward["p"] < 0.020
    assert forward["lo"] > 0 and forward["hi"] < 0.16
    # Swapping the two classifiers flips the difference, not the evidence.
    backward = paired_bootstrap(b, a, n_boot=20000, seed=0)
    assert backward["diff"] == pytest.approx(-0.08) and backward["p"] == pytest.approx(forward["p"])


def test_paired_bootstrap_without_a_difference_is_not_significant():
    a, b = _paired(20, 20, both=100, neither=60)
    result = paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert result["diff"] == 0 and result["p"] > 0.8 and result["lo"] < 0 < result["hi"]


def test_mcnemar_large_counts_use_the_continuity_correction():
    # 10 vs 30 discordant pairs: chi2 = (|10 - 30| - 1)^2 / 40 = 9.025 -> p = 0.002663 (uncorrected: 0.001565)
    result = mcnemar(*_paired(10, 30, both=50, neither=10))
    assert (result["only_a"], result["only_b"]) == (10, 30)
    assert result["p"] == pytest.approx(0.002663, abs=2e-6) and "continuity" in result["method"]
    # 8 vs 17 (25 pairs, the first count that is not exact): (9 - 1)^2 / 25 = 2.56 -> p = 0.10960
    assert mcnemar(*_paired(8, 17))["p"] == pytest.approx(0.10960, abs=1e-5)


def test_mcnemar_few_discordant_pairs_use_the_exact_binomial():
    # 2 vs 10: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096 = 0.038574
    result = mcnemar(*_paired(2, 10, both=30))
    assert result["p"] == pytest.approx(158 / 4096) and result["method"] == "exact binomial"
    assert mcnemar(*_paired(0, 0, both=5))["p"] == 1.0
