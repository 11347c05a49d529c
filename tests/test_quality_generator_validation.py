"""The scorer injected into generator training: FD/KID against real val slices and TSTR-lite accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord, save_classes, save_manifest
from mrisynth.errors import UserError
from mrisynth.quality.generator_validation import build_generator_validation

LEVELS = {"dark": 50, "mid": 128, "bright": 205}


def _image(level: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(level, 12, size=(16, 16)), 0, 255).astype(np.uint8)


@pytest.fixture
def three_tone_dir(tmp_path):
    """Three classes told apart by brightness: 20 train and 6 val images each (29 stats features need ~20 per
    class for the linear classifier to ignore the noise ones)."""
    rng = np.random.default_rng(0)
    records = []
    for label, (name, level) in enumerate(LEVELS.items()):
        for k in range(26):
            path = tmp_path / f"{name}{k}.png"
            save_grayscale_png(_image(level, rng), path)
            records.append(ImageRecord(id=f"{name}{k}", path=str(path), class_name=name, label=label,
                                       patient_id=f"{name}{k}", split="train" if k < 20 else "val"))
    data = tmp_path / "data"
    data.mkdir()
    save_manifest(records, data / "manifest.csv")
    save_classes(list(LEVELS), data)
    return data


def test_images_like_the_real_ones_score_better_than_wrong_ones(three_tone_dir):
    validate = build_generator_validation(three_tone_dir, image_size=16)
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    good = np.stack([_image(list(LEVELS.values())[c], rng) for c in labels])
    # Every image looks like the "dark" class, whatever its label.
    collapsed = np.stack([_image(LEVELS["dark"], rng) for _ in labels])
    good_scores, bad_scores = validate(good, labels), validate(collapsed, labels)
    assert set(good_scores) == {"val_fd", "val_kid", "val_tstr_acc"}
    assert good_scores["val_tstr_acc"] == 1.0  # each image carries its class
    assert bad_scores["val_tstr_acc"] == pytest.approx(1 / 3)  # only the dark-labelled third is right
    assert good_scores["val_fd"] < 0.5 * bad_scores["val_fd"]
    assert good_scores["val_kid"] < bad_scores["val_kid"]


def test_a_data_folder_without_val_images_is_a_user_error(three_tone_dir):
    from mrisynth.data.manifest import load_manifest

    rows = load_manifest(three_tone_dir)
    for r in rows:
        r.split = "train"
    save_manifest(rows, three_tone_dir / "manifest.csv")
    with pytest.raises(UserError, match="validation"):
        build_generator_validation(three_tone_dir, image_size=16)
