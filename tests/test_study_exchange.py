"""The exchange rate: a synthetic condition's worth in real images, read off the real-only curve."""

import math

import pytest

from mrisynth.study.exchange import equivalent_real_images, exchange_rates

CURVE = [(400, 0.85), (100, 0.70), (200, 0.80)]  # real-only: accuracy at 100, 200 and 400 real images


def test_equivalent_real_images_on_a_constructed_curve():
    assert equivalent_real_images(CURVE, 0.80) == (pytest.approx(200.0), None)
    n, beyond = equivalent_real_images(CURVE, 0.75)  # half-way in accuracy = half-way in log N
    assert beyond is None and n == pytest.approx(math.sqrt(100 * 200))  # 141.42
    assert equivalent_real_images(CURVE, 0.90) == (None, "above")
    assert equivalent_real_images(CURVE, 0.60) == (None, "below")
    # a dip in the real-only curve is read as flat: more real images never count as worse
    assert equivalent_real_images([(100, 0.7), (200, 0.65), (400, 0.8)], 0.7) == (pytest.approx(100.0), None)


def _trials(values: dict[tuple[float, str], list[float]], real: dict[float, int]) -> list[dict]:
    return [{"fraction": f, "condition": c, "kind": "ratio", "seed": s, "train_real": real[f], "test_accuracy": a}
            for (f, c), accs in values.items() for s, a in enumerate(accs)]


def test_exchange_rates_with_an_interval_over_runs():
    real = {0.25: 100, 0.5: 200, 1.0: 400}
    values = {(0.25, "r0"): [0.70, 0.70, 0.70], (0.5, "r0"): [0.80, 0.80, 0.80], (1.0, "r0"): [0.85, 0.85, 0.85],
              (0.25, "r1"): [0.78, 0.80, 0.82], (1.0, "r1"): [0.90, 0.91, 0.92]}
    rows = {(r["fraction"], r["condition"]): r for r in exchange_rates(_trials(values, real), n_boot=500)}
    quarter = rows[(0.25, "r1")]
    # mean 0.80 -> as good as 200 real images: adding the synthetic set is worth 100 more real images
    assert quarter["worth_real_images"] == pytest.approx(100.0) and quarter["real_images"] == 100
    assert quarter["lo"] < 100 < quarter["hi"] and quarter["n_runs"] == 3
    full = rows[(1.0, "r1")]
    assert full["beyond"] == "above" and full["worth_real_images"] is None and full["lo"] is None


def test_no_curve_no_exchange_rate():
    values = {(1.0, "r0"): [0.8, 0.8], (1.0, "r1"): [0.9, 0.9]}
    assert exchange_rates(_trials(values, {1.0: 400}), n_boot=100) == []
