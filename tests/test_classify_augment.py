import dataclasses

import pytest
import torch

from mrisynth.classify.augment import affine_matrices, augment_batch, random_affine_params, to_unit_float
from mrisynth.classify.config import AugmentConfig

STILL = AugmentConfig(hflip=False, rotation_deg=0, shift=0, shear_deg=0, zoom=0, brightness_min=1, brightness_max=1)


def _images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)  # (B, 1, H, W) uint8


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fixed(n: int, **values: float) -> dict[str, torch.Tensor]:
    base = {"angle": 0.0, "shift_x": 0.0, "shift_y": 0.0, "shear": 0.0, "zoom_x": 1.0, "zoom_y": 1.0}
    params = {k: torch.full((n,), float(v)) for k, v in {**base, **values}.items()}
    params["flip"] = torch.zeros(n, dtype=torch.bool)
    return params


def _warp(x: torch.Tensor, params: dict) -> torch.Tensor:
    grid = torch.nn.functional.affine_grid(affine_matrices(params), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_zero_ranges_give_the_rescaled_input():
    x = _images()
    out = augment_batch(x, STILL, generator=_gen())
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, x.float() / 255, atol=1e-5, rtol=0)
    disabled = augment_batch(x, AugmentConfig(enabled=False), generator=_gen())
    torch.testing.assert_close(disabled, to_unit_float(x))


def test_parameters_cover_the_keras_ranges():
    cfg = AugmentConfig()
    p = random_affine_params(4000, cfg, generator=_gen())
    for key, lo, hi in [("angle", -15, 15), ("shift_x", -0.1, 0.1), ("shift_y", -0.1, 0.1), ("shear", -10, 10),
                        ("zoom_x", 0.8, 1.2), ("zoom_y", 0.8, 1.2), ("brightness", 0.8, 1.2)]:
        v = p[key]
        assert v.min() >= lo and v.max() <= hi, key
        assert v.min() < lo + 0.05 * (hi - lo) and v.max() > hi - 0.05 * (hi - lo), key  # the range is used
    assert not torch.equal(p["zoom_x"], p["zoom_y"])  # each axis scales independently
    assert 0.45 < p["flip"].float().mean() < 0.55


def test_geometry_of_shift_rotation_and_flip():
    x = _images(1).float() / 255
    # a shift of 0.25 of a 16 px side moves the content by exactly 4 px
    torch.testing.assert_close(_warp(x, _fixed(1, shift_x=0.25))[..., :12], x[..., 4:], atol=1e-4, rtol=0)
    rotated = _warp(x, _fixed(1, angle=90.0))
    assert any(torch.allclose(rotated, torch.rot90(x, k, dims=(2, 3)), atol=1e-4) for k in (1, 3))
    flipped = {**_fixed(1), "flip": torch.ones(1, dtype=torch.bool)}
    torch.testing.assert_close(_warp(x, flipped), x.flip(-1), atol=1e-4, rtol=0)
    # zoom 0.5 samples the central half: a 4 px square in the middle grows to 8 px
    square = torch.zeros(1, 1, 16, 16)
    square[..., 6:10, 6:10] = 1.0
    zoomed = _warp(square, _fixed(1, zoom_x=0.5, zoom_y=0.5))
    assert (zoomed[0, 0, 8] > 0.5).sum() == 8


def test_nearest_fill_leaves_no_black_corners_and_brightness_clips():
    x = torch.full((8, 1, 16, 16), 200, dtype=torch.uint8)
    out = augment_batch(x, dataclasses.replace(AugmentConfig(), brightness_min=1, brightness_max=1), generator=_gen())
    torch.testing.assert_close(out, torch.full_like(out, 200 / 255), atol=1e-5, rtol=0)
    bright = augment_batch(torch.full((64, 1, 8, 8), 250, dtype=torch.uint8),
                           dataclasses.replace(STILL, brightness_min=0.8, brightness_max=1.2), generator=_gen())
    assert bright.max() == 1.0 and bright.min() >= 0.8 * 250 / 255 - 1e-6
    assert (bright == 1.0).any() and (bright < 1.0).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_same_generator_seed_same_batch(seed):
    x = _images(8)
    a = augment_batch(x, AugmentConfig(), generator=_gen(seed))
    b = augment_batch(x, AugmentConfig(), generator=_gen(seed))
    c = augment_batch(x, AugmentConfig(), generator=_gen(seed + 10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0
