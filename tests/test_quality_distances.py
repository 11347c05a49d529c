"""Frechet distance, KID and precision/recall/density/coverage on Gaussian feature sets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from mrisynth.quality.distances import (
    DistanceConfig,
    compare_sets,
    frechet_distance,
    kernel_inception_distance,
    mmd2_unbiased,
    prdc,
)


def _gauss(n: int, d: int, *, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, (n, d))


def test_fd_same_set_is_zero_and_grows_with_shift() -> None:
    a = _gauss(400, 8, seed=0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    near = frechet_distance(a, _gauss(400, 8, seed=1))
    far = frechet_distance(a, _gauss(400, 8, seed=1, shift=1.0))
    assert near < 0.3
    assert far == pytest.approx(8.0, rel=0.15)  # ||mean shift||^2 = 8 x 1^2
    assert frechet_distance(a, _gauss(400, 8, seed=1, scale=2.0)) > 5 * near


def test_fd_matches_the_textbook_formula() -> None:
    a, b = _gauss(300, 5, seed=2), _gauss(300, 5, seed=3, shift=0.3, scale=1.5)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_fd_with_fewer_samples_than_dimensions_is_finite_and_noted() -> None:
    a, b = _gauss(10, 50, seed=4), _gauss(10, 50, seed=5)
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value >= 0
    out = compare_sets(a, b, DistanceConfig(n_bootstrap=3), rng=np.random.default_rng(0))
    assert any("fewer samples (10) than feature dimensions (50)" in n for n in out["notes"])
    assert np.isfinite(out["fd"]) and out["fd_ci"][0] <= out["fd_ci"][1]
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_kid_near_zero_for_one_distribution_and_positive_for_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = _gauss(300, 16, seed=6), _gauss(300, 16, seed=7)
    same, ci = kernel_inception_distance(a, b, n_bootstrap=200, subset_size=1000, rng=rng)
    shifted, _ = kernel_inception_distance(a, b + 1.0, n_bootstrap=20, subset_size=1000, rng=rng)
    assert same == pytest.approx(mmd2_unbiased(a, b))  # every image used: the plain unbiased estimate
    assert ci[0] <= 0.0 <= ci[1]  # zero is a plausible value for two samples of one distribution
    assert shifted > 1.0 and shifted > 50 * abs(same)
    # The biased estimator would be > 0 for a set against itself; the unbiased one is not.
    assert mmd2_unbiased(a, a) <= 0.0


def test_prdc_identical_sets_are_one_and_disjoint_sets_zero() -> None:
    a = _gauss(200, 6, seed=8)
    same = prdc(a, a.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    # Strictly inside, as the reference: each real ball holds its own copy and k-1 neighbours' copies, not
    # the k-th neighbour on its edge, so exact copies have density exactly 1 (1.2 with "<=").
    assert same["density"] == 1.0
    far = prdc(a, a + 100.0, k=5)
    assert far["precision"] == 0.0 and far["coverage"] == 0.0
    # A collapsed generator (all samples near one real point) has high precision but low recall/coverage.
    collapsed = prdc(a, a[:1] + 0.01 * _gauss(50, 6, seed=9), k=5)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2 and collapsed["coverage"] < 0.2
    with pytest.raises(ValueError, match="more than 5"):
        prdc(a, a[:5], k=5)


def test_compare_sets_small_and_empty_sets_explain_themselves() -> None:
    rng = np.random.default_rng(0)
    a = _gauss(4, 3, seed=10)
    out = compare_sets(a, a + 1, DistanceConfig(n_bootstrap=2), rng=rng)
    assert out["fd"] > 0 and "precision" not in out
    assert any("k=5" in n for n in out["notes"])
    empty = compare_sets(a, np.zeros((0, 3)), DistanceConfig(), rng=rng)
    assert "fd" not in empty and empty["n_synthetic"] == 0 and empty["notes"]


def test_kid_interval_is_a_bootstrap_over_images_with_width_on_small_sets() -> None:
    from mrisynth.quality.distances import _poly_kernel, _weighted_mmd2

    a, b = _gauss(120, 8, seed=11), _gauss(150, 8, seed=12, shift=0.3)
    ones_a, ones_b = np.ones((1, 120)), np.ones((1, 150))
    plain = _weighted_mmd2(_poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b), ones_a, ones_b)[0]
    assert plain == pytest.approx(mmd2_unbiased(a, b))
    value, ci = kernel_inception_distance(a, b, n_bootstrap=300, subset_size=1000, rng=np.random.default_rng(1))
    assert ci[0] < value < ci[1] and ci[1] - ci[0] > 0.2 * value  # 270 images: real spread, not zero width


def test_resampling_patients_widens_intervals_when_slices_are_near_duplicates() -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(20, 6))
    real = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(200, 6))  # 20 patients x 10 near-copies
    patients = np.repeat(np.arange(20), 10)
    fake = _gauss(200, 6, seed=13, shift=0.2)
    cfg = DistanceConfig(n_bootstrap=200)
    by_image = compare_sets(real, fake, cfg, rng=np.random.default_rng(3))
    by_patient = compare_sets(real, fake, cfg, rng=np.random.default_rng(3), real_groups=patients)
    assert by_patient["kid"] == pytest.approx(by_image["kid"])
    width = {k: (m["kid_ci"][1] - m["kid_ci"][0]) for k, m in (("image", by_image), ("patient", by_patient))}
    assert width["patient"] > 1.5 * width["image"]
    fd_width = {k: (m["fd_ci"][1] - m["fd_ci"][0]) for k, m in (("image", by_image), ("patient", by_patient))}
    assert fd_width["patient"] > 1.5 * fd_width["image"]
