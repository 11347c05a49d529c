"""MS-SSIM and within-class diversity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrisynth.quality.diversity import mean_pairwise_msssim, ms_ssim, msssim_scales


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, S, S) in [0, 1]


def test_scales_adapt_to_image_size() -> None:
    assert msssim_scales(256) == (5, 11)
    assert msssim_scales(64) == (3, 11)
    assert msssim_scales(16) == (1, 11)
    assert msssim_scales(8) == (1, 7)


@pytest.mark.parametrize("size", [8, 32, 64])
def test_msssim_identity_symmetry_and_degradation(size: int) -> None:
    x = _smooth_images(4, size, 0)
    y = _smooth_images(4, size, 1)
    assert torch.allclose(ms_ssim(x, x), torch.ones(4), atol=1e-5)
    assert torch.allclose(ms_ssim(x, y), ms_ssim(y, x), atol=1e-6)
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    slightly, unrelated = ms_ssim(x, noisy), ms_ssim(x, y)
    assert (slightly > unrelated).all()
    assert ((unrelated >= 0) & (unrelated <= 1)).all()


def test_collapsed_set_is_less_diverse_than_varied_set() -> None:
    varied = (_smooth_images(30, 32, 2)[:, 0].numpy() * 255).astype(np.uint8)
    one = varied[:1].astype(int)
    collapsed = np.clip(one + np.random.default_rng(0).integers(-3, 4, (30, 32, 32)), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    d_varied = mean_pairwise_msssim(varied, n_pairs=60, rng=rng)
    d_collapsed = mean_pairwise_msssim(collapsed, n_pairs=60, rng=rng)
    assert d_collapsed["msssim"] > 0.9 > d_varied["msssim"]
    assert d_varied["msssim_ci"][0] <= d_varied["msssim"] <= d_varied["msssim_ci"][1]
    assert mean_pairwise_msssim(varied[:1], n_pairs=10, rng=rng)["msssim"] is None


def test_the_interval_reflects_the_images_not_how_many_pairs_were_drawn() -> None:
    images = (_smooth_images(20, 16, 3)[:, 0].numpy() * 255).astype(np.uint8)
    few = mean_pairwise_msssim(images, n_pairs=100, rng=np.random.default_rng(1), n_boot=400)
    many = mean_pairwise_msssim(images, n_pairs=1600, rng=np.random.default_rng(1), n_boot=400)
    width = {k: d["msssim_ci"][1] - d["msssim_ci"][0] for k, d in (("few", few), ("many", many))}
    # 16x the pairs of the same 20 images: a pair-spread interval would be 4x narrower; this one is not
    assert width["many"] > 0.6 * width["few"] and width["many"] > 0


def test_resampling_patients_widens_the_interval_for_near_duplicate_slices() -> None:
    base = (_smooth_images(8, 16, 4)[:, 0].numpy() * 255).astype(int)  # 8 patients
    noise = np.random.default_rng(5).integers(-2, 3, (32, 16, 16))
    slices = np.clip(np.repeat(base, 4, axis=0) + noise, 0, 255).astype(np.uint8)  # 4 near-copies each
    patients = np.repeat(np.arange(8), 4)
    by_image = mean_pairwise_msssim(slices, n_pairs=600, rng=np.random.default_rng(6), n_boot=400)
    by_patient = mean_pairwise_msssim(slices, n_pairs=600, rng=np.random.default_rng(6), n_boot=400, groups=patients)
    assert by_patient["msssim"] == by_image["msssim"]
    assert (by_patient["msssim_ci"][1] - by_patient["msssim_ci"][0]) > 1.3 * (
        by_image["msssim_ci"][1] - by_image["msssim_ci"][0])
