"""Opt-in (-m realdata): the memorisation check on Figshare separates planted copies from other patients' slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrisynth.cli import main
from mrisynth.data.cache import load_cache
from mrisynth.generate.output import SyntheticWriter
from mrisynth.quality import AuditConfig, run_audit


@pytest.mark.realdata
def test_figshare_copies_flagged_and_heldout_patients_not(figshare_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["-q", "data", "prepare", str(figshare_dir / "images"), "--metadata",
                 str(figshare_dir / "patients.csv"), "--split", "patient", "--out", str(data)]) == 0
    real = load_cache(data, 128)  # the audit's default size: 64 px thumbnails average pixel noise
    rng = np.random.default_rng(0)
    writer = SyntheticWriter(tmp_path / "syn", real.classes, generator_sha256="test")
    # 60 slices of unseen (test-split) patients: a perfect generator that copies nobody in train.
    for n, i in enumerate(rng.choice(real.indices("test"), 60, replace=False)):
        writer.add(np.asarray(real.images[i]), image_id=f"fresh-{n}", class_name=real.records[i].class_name,
                   seed=n, steps=1)
    copied = rng.choice(real.indices("train"), 20, replace=False)
    for n, i in enumerate(copied):  # mirrored, lightly noised training slices
        noisy = np.asarray(real.images[i])[:, ::-1] + rng.normal(0, 5, (128, 128))
        writer.add(np.clip(noisy, 0, 255).astype(np.uint8), image_id=f"copy-{n}",
                   class_name=real.records[i].class_name, seed=n, steps=1)
    writer.finish()
    cfg = AuditConfig(image_size=128, feature_spaces=["stats"], max_per_class=300, diversity_pairs=50)
    result = run_audit(cfg, real_dir=data, synthetic_dir=tmp_path / "syn", out_dir=tmp_path / "audit")
    memo = result["memorisation"]
    flagged = {p["synthetic_id"] for p in memo["worst_pairs"] if p["correlation"] >= cfg.memorisation.pixel_threshold}
    assert memo["pixel"]["n_above"] == 20
    assert all(s.startswith("copy-") for s in flagged)
    assert memo["pixel"]["heldout_in_train"]["nearest"]["max"] < cfg.memorisation.pixel_threshold
