"""Copy detection: planted copies (noised, flipped) are found; img2img sources; patients; the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisynth.data.manifest import ImageRecord
from mrisynth.quality.memorisation import (
    MemorisationConfig,
    nearest_neighbours,
    pixel_vectors,
    run_memorisation,
    save_pairs_grid,
)


def _images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random images (low-frequency blobs), so unrelated images are not trivially uncorrelated."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (n, size // 8, size // 8))
    return np.kron(small, np.ones((8, 8))).astype(np.uint8)


def _records(n: int, prefix: str, **fields) -> list[ImageRecord]:
    return [ImageRecord(id=f"{prefix}{i}", path="", class_name="a", label=0, patient_id=f"p{i // 2}", **fields)
            for i in range(n)]


def test_pixel_vectors_dot_product_is_correlation() -> None:
    x = _images(2, 32, 0)
    v = pixel_vectors(x, size=32)
    r = np.corrcoef(x[0].ravel().astype(float), x[1].ravel().astype(float))[0, 1]
    assert abs(float(v[0] @ v[1]) - r) < 1e-5
    # Correlation ignores brightness and contrast changes.
    assert float(v[0] @ pixel_vectors(x[:1] // 2 + 60, size=32)[0]) > 0.99
    sims, idx = nearest_neighbours(v, v, chunk=1)
    assert list(idx) == [0, 1] and np.allclose(sims, 1.0, atol=1e-5)


def test_planted_noised_flipped_copy_is_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = _images(40, 64, 1)
    synthetic = _images(10, 64, 2)
    noisy = train[17].astype(int) + rng.normal(0, 8, (64, 64))
    synthetic[3] = np.clip(noisy, 0, 255)[:, ::-1].astype(np.uint8)  # lightly noised and mirrored
    synthetic[6] = train[5][::-1, :]  # an upside-down exact copy
    syn_records = _records(10, "s")
    syn_records[3].source_image_id = "t17"  # as an img2img output of t17 would be
    train_records = _records(40, "t", split="train")
    heldout = _images(6, 64, 3)
    summary, rows, worst = run_memorisation(
        synthetic=synthetic, synthetic_records=syn_records, train=train, train_records=train_records,
        heldout=heldout, all_real_records=train_records, features={}, cfg=MemorisationConfig())
    pixel = summary["pixel"]
    assert pixel["n_above"] == 2 and pixel["share_above"] == 0.2
    assert {(w["synthetic_id"], w["train_id"], w["flip"]) for w in summary["worst_pairs"][:2]} == {
        ("s3", "t17", "hflip"), ("s6", "t5", "vflip")}
    assert pixel["heldout_in_train"]["n"] == 6 and pixel["heldout_in_train"]["share_above"] == 0.0
    assert pixel["share_above_heldout_p99"] >= 0.2
    assert [p["patient_id"] for p in summary["patients_reproduced"]] == ["p2", "p8"]
    assert rows[3]["nn_pixel_train_id"] == "t17" and rows[3]["nn_pixel_corr"] > 0.95
    # The mirrored output correlates poorly with its unmirrored source: flips matter for the NN search only.
    assert summary["img2img"]["n"] == 1 and "source_corr" in rows[3]
    png = save_pairs_grid(worst[:3], synthetic, train, tmp_path / "pairs.png",
                          synthetic_ids=[r.id for r in syn_records], train_ids=[r.id for r in train_records])
    assert png.stat().st_size > 1000


def test_feature_cosine_and_sources_outside_train() -> None:
    train, synthetic = _images(12, 32, 4), _images(4, 32, 5)
    rng = np.random.default_rng(0)
    feats_train = rng.normal(size=(12, 8))
    feats_syn = rng.normal(size=(4, 8))
    feats_syn[1] = feats_train[7] * 3  # same direction: cosine 1
    syn_records = _records(4, "s")
    syn_records[0].source_image_id = "v1"  # a validation image used as img2img source: a leak
    real = _records(12, "t", split="train") + [ImageRecord(id="v1", path="", class_name="a", label=0, split="val")]
    summary, rows, _ = run_memorisation(
        synthetic=synthetic, synthetic_records=syn_records, train=train, train_records=real[:12],
        heldout=np.zeros((0, 32, 32), np.uint8), all_real_records=real,
        features={"toy": {"synthetic": feats_syn, "train": feats_train, "heldout": np.zeros((0, 8))}},
        cfg=MemorisationConfig(feature_threshold=0.99))
    toy = summary["features"]["toy"]
    assert toy["share_above"] == 0.25 and rows[1]["nn_toy_train_id"] == "t7"
    assert summary["img2img"]["n_source_outside_train"] == 1
    assert any("val" in w and "train split only" in w for w in summary["warnings"])
