"""Shared fixtures: small synthetic data sets written to tmp folders; nothing here needs the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord, save_classes, save_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def figshare_dir() -> Path:
    """The real Figshare copy (see realdata.py); tests using it are marked `realdata` and skip when it is absent."""
    from realdata import ENV, find_figshare

    path, why = find_figshare(REPO_ROOT)
    if path is None and os.environ.get(ENV):
        pytest.fail(why)  # the user pointed at the data: a wrong path must not pass as a skip
    if path is None:
        pytest.skip(why)
    return path


@pytest.fixture
def tiny_manifest_dir(tmp_path: Path) -> Path:
    """A prepared data folder: 3 classes x 4 patients x 3 slices of 40x32 random images, patient-split."""
    rng = np.random.default_rng(0)
    classes = ["glioma", "meningioma", "pituitary"]
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    records = []
    for label, name in enumerate(classes):
        for p in range(4):
            split = ("train", "train", "val", "test")[p]
            for s in range(3):
                arr = rng.integers(0, 256, size=(32, 40), dtype=np.uint8)
                arr[8:16, 8 + 8 * label:16 + 8 * label] = 255  # class-dependent bright block
                path = img_dir / f"{name}-{p}-{s}.png"
                save_grayscale_png(arr, path)
                records.append(ImageRecord(
                    id=f"{name}-{p}-{s}", path=str(path), class_name=name, label=label,
                    patient_id=f"{name[:2]}{p}", split=split, width=40, height=32,
                ))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    save_manifest(records, data_dir / "manifest.csv")
    save_classes(classes, data_dir)
    return data_dir


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread; two threads fight over CI's two cores (4-10x slower measured).

    Session scope, so module-scoped fixtures (trained tiny generators) run on one thread too.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
