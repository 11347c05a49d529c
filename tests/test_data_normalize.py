"""Intensity normalisation: settings parse or fail in one line, literal outputs, and invariance to a scanner's scale."""

from __future__ import annotations

import numpy as np
import pytest

from mrisynth.data.normalize import (
    NONE,
    PERCENTILE,
    ZSCORE,
    head_mask,
    normalize_image,
    normalize_images,
    otsu_threshold,
    parse_normalization,
)
from mrisynth.data.phantom import PhantomConfig, assign_classes, render_patient
from mrisynth.errors import UserError


def disc_head(size: int = 40, *, inside=(60, 100), background: int = 0) -> np.ndarray:
    """A disc of radius 12: left half `inside[0]`, right half `inside[1]`, on a flat background."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), background, np.uint8)
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= 12 ** 2
    img[disc & (xx < size // 2)] = inside[0]
    img[disc & (xx >= size // 2)] = inside[1]
    return img


def phantom_slices(site: str = "A") -> np.ndarray:
    cfg = PhantomConfig(patients=3, slices_per_patient=2, size=64, seed=11, site=site)
    return np.stack([img for i, kind in enumerate(assign_classes(cfg)) for _, _, img, _ in render_patient(cfg, i, kind)])


@pytest.mark.parametrize(("spec", "method", "low", "high", "canonical"), [
    ("none", NONE, 0.5, 99.5, "none"),
    ("percentile", PERCENTILE, 0.5, 99.5, "percentile"),
    (" Percentile:1-99 ", PERCENTILE, 1.0, 99.0, "percentile:1-99"),
    ("percentile:0.5-99.5", PERCENTILE, 0.5, 99.5, "percentile"),
    ("zscore", ZSCORE, 0.5, 99.5, "zscore"),
])
def test_settings_parse_to_a_canonical_spec(spec, method, low, high, canonical):
    norm = parse_normalization(spec)
    assert (norm.method, norm.low, norm.high, norm.spec) == (method, low, high, canonical)


@pytest.mark.parametrize("spec", ["minmax", "zscore:otsu", "percentile:99-1", "percentile:a-b", "percentile:1-120"])
def test_bad_settings_are_one_line_user_errors(spec):
    with pytest.raises(UserError) as err:
        parse_normalization(spec)
    assert "\n" not in str(err.value) and spec in str(err.value)


def test_none_returns_the_images_untouched():
    stack = phantom_slices()
    assert normalize_images(stack, "none") is stack
    first = stack[0]
    assert normalize_image(first, "none") is first


def test_percentile_stretches_the_chosen_percentiles_to_the_full_range():
    img = np.arange(100, dtype=np.uint8).reshape(10, 10)
    out = normalize_image(img, "percentile:0-100")
    assert out.dtype == np.uint8
    assert (out[0, 0], out[5, 0], out[9, 9]) == (0, 129, 255)  # 50 * 255 / 99 = 128.8
    # The default 0.5..99.5 clips the extremes: a single hot pixel does not set the scale.
    img = np.full((20, 20), 50, np.uint8)
    img[:10] = 100
    img[0, 0] = 255
    out = normalize_image(img, "percentile")
    assert (out[0, 0], out[0, 1], out[19, 19]) == (255, 255, 0)


def test_zscore_within_the_head_mask_has_literal_grey_levels_and_a_black_background():
    # Inside the disc: half 60, half 100 -> mean 80, sd 20 -> z = -1, +1 -> 96 - 40, 96 + 40.
    out = normalize_image(disc_head(background=5), "zscore")
    assert sorted(np.unique(out).tolist()) == [0, 56, 136]
    assert out[0, 0] == 0 and out[20, 12] == 56 and out[20, 28] == 136


def test_head_mask_fills_holes_and_keeps_the_largest_region():
    img = np.zeros((40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    img[(r >= 10) & (r <= 13)] = 200  # a bright skull-like ring ...
    img[r < 10] = 10  # ... around dark content below the threshold
    img[1:3, 1:3] = 200  # a bright speck in the background
    mask = head_mask(img)
    assert mask[20, 20] and mask[20, 31]  # the hole is filled
    assert not mask[1, 1] and not mask[20, 36]  # the speck and the air are out
    assert otsu_threshold(np.where(np.arange(100).reshape(10, 10) < 50, 20, 200).astype(np.uint8)) == 20


@pytest.mark.parametrize("spec", ["percentile", "zscore"])
def test_a_scanners_gain_and_offset_hardly_change_the_normalised_image(spec):
    # What the setting is for: the same anatomy at another intensity scale gives (nearly) the same model input.
    base = phantom_slices().astype(np.float32)
    shifted = np.clip(1.4 * base + 25, 0, 255).round().astype(np.uint8)
    a, b = normalize_images(base.astype(np.uint8), spec), normalize_images(shifted, spec)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 1.5
    raw = np.abs(base - shifted.astype(np.float32)).mean()
    assert raw > 30  # without normalisation the inputs differ by tens of grey levels


@pytest.mark.parametrize("spec", ["percentile", "zscore"])
def test_stack_equals_image_by_image_and_a_second_pass_changes_little(spec):
    stack = phantom_slices()
    once = normalize_images(stack, spec)
    assert np.array_equal(once, np.stack([normalize_image(img, spec) for img in stack]))
    twice = normalize_images(once, spec)
    assert np.abs(once.astype(int) - twice.astype(int)).mean() < 0.1


@pytest.mark.parametrize("spec", ["percentile", "zscore"])
def test_blank_and_16_bit_images(spec):
    assert not normalize_image(np.zeros((8, 8), np.uint8), spec).any()
    wide = (disc_head().astype(np.uint16) * 200)  # 16-bit values up to 20,000
    out = normalize_image(wide, spec)
    assert out.dtype == np.uint8 and out.max() > 100
