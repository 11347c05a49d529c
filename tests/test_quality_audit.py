"""End-to-end audit on the tiny prepared data set: outputs, structure, planted copies, edge cases, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mrisynth.cli import main
from mrisynth.data.cache import load_cache
from mrisynth.errors import UserError
from mrisynth.generate.output import SyntheticWriter
from mrisynth.quality import AuditConfig, run_audit
from mrisynth.quality.audit import patient_halves

SIZE = 32


def _config(**changes) -> AuditConfig:
    cfg = AuditConfig(image_size=SIZE, feature_spaces=["stats"], max_per_class=0, diversity_pairs=20)
    cfg.memorisation.n_worst_pairs = 4
    cfg.distances.n_bootstrap = 5
    cfg.distances.kid_subsets = 5
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def _write_synthetic(real_dir: Path, out: Path, *, classes=None, copy_first_train: bool = True,
                     seed: int = 1) -> Path:
    """A synthetic set: per class noisy fresh images, plus (optionally) a flipped, lightly noised train copy."""
    real = load_cache(real_dir, SIZE)
    rng = np.random.default_rng(seed)
    writer = SyntheticWriter(out, real.classes, generator_sha256="test")
    train = real.indices("train")
    for c in classes or real.classes:
        for i in range(8):
            img = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
            writer.add(img, image_id=f"syn-{c}-{i}", class_name=c, seed=i, steps=1)
    if copy_first_train:
        src = real.records[train[0]]
        noisy = np.clip(real.images[train[0]][:, ::-1].astype(int) + rng.integers(-4, 5, (SIZE, SIZE)), 0, 255)
        writer.add(noisy.astype(np.uint8), image_id="syn-copy", class_name=src.class_name, seed=99, steps=1,
                   strength=0.1, source_image_id=src.id)
    writer.finish()
    return out


def test_audit_writes_outputs_and_finds_planted_copy(tiny_manifest_dir: Path, tmp_path: Path) -> None:
    syn = _write_synthetic(tiny_manifest_dir, tmp_path / "syn")
    out = tmp_path / "audit"
    result = run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=syn, out_dir=out)
    for name in ("quality.json", "per_class_metrics.csv", "diversity.csv", "nearest_neighbours.csv",
                 "worst_pairs.png", "config.yaml"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "quality.json").read_text())
    assert saved["classes"] == ["glioma", "meningioma", "pituitary"]
    stats = saved["feature_spaces"]["stats"]
    assert set(stats["per_class"]) == set(saved["classes"])
    rvr = stats["real_vs_real"]
    # Pure-noise synthetic images sit farther from real half A than real half B does (FD is clamped at 0,
    # so ">= 0" would say nothing).
    assert 0 < rvr["overall"]["fd"] < rvr["synthetic_vs_half"]["overall"]["fd"]
    assert stats["overall"]["fd"] > rvr["overall"]["fd"]
    # The calibration compares half B and the synthetic set with half A at the same sample size.
    assert rvr["overall"]["n_synthetic"] == rvr["synthetic_vs_half"]["overall"]["n_synthetic"] > 0
    memo = saved["memorisation"]
    assert memo["pixel"]["n_above"] == 1
    assert memo["worst_pairs"][0]["synthetic_id"] == "syn-copy"
    assert memo["worst_pairs"][0]["flip"] == "hflip"
    assert memo["img2img"]["n"] == 1 and memo["img2img"]["n_source_outside_train"] == 0
    assert memo["patients_reproduced"][0]["synthetic_ids"] == ["syn-copy"]
    with open(out / "nearest_neighbours.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25
    copy_row = next(r for r in rows if r["synthetic_id"] == "syn-copy")
    assert float(copy_row["nn_pixel_corr"]) > 0.95 and "nn_stats_cos" in copy_row
    assert result["diversity"]["per_class"]["glioma"]["synthetic"]["n_pairs"] == 20


def test_patient_halves_share_no_patient_and_cover_every_class(tiny_manifest_dir: Path) -> None:
    real = load_cache(tiny_manifest_dir, SIZE)
    train = real.indices("train")
    a, b = patient_halves(real, train, np.random.default_rng(0))
    assert sorted(np.concatenate([a, b])) == sorted(train)
    patients = [{real.records[i].patient_id for i in half} for half in (a, b)]
    assert not patients[0] & patients[1]
    for half in (a, b):
        assert {real.records[i].class_name for i in half} == set(real.classes)


def test_audit_class_without_synthetic_images_is_reported(tiny_manifest_dir: Path, tmp_path: Path) -> None:
    syn = _write_synthetic(tiny_manifest_dir, tmp_path / "syn", classes=["glioma", "meningioma"],
                           copy_first_train=False)
    result = run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=syn, out_dir=tmp_path / "a")
    empty = result["feature_spaces"]["stats"]["per_class"]["pituitary"]
    assert empty["n_synthetic"] == 0 and "fd" not in empty
    assert result["diversity"]["per_class"]["pituitary"]["synthetic"]["msssim"] is None
    assert any("'pituitary' has no synthetic images" in w for w in result["warnings"])
    assert result["feature_spaces"]["stats"]["per_class"]["glioma"]["fd"] > 0


def test_audit_rejects_unknown_class_and_missing_weights(tiny_manifest_dir: Path, tmp_path: Path) -> None:
    syn = tmp_path / "syn"
    writer = SyntheticWriter(syn, ["astrocytoma"], generator_sha256="x")
    writer.add(np.zeros((SIZE, SIZE), np.uint8), image_id="a", class_name="astrocytoma", seed=0, steps=1)
    writer.finish()
    with pytest.raises(UserError, match="astrocytoma"):
        run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=syn, out_dir=tmp_path / "a")
    good = _write_synthetic(tiny_manifest_dir, tmp_path / "good")
    with pytest.raises(UserError, match="inception_weights"):
        run_audit(_config(feature_spaces=["stats", "inception"]), real_dir=tiny_manifest_dir,
                  synthetic_dir=good, out_dir=tmp_path / "b")


def test_audit_in_the_classifier_space(tiny_manifest_dir: Path, tmp_path: Path) -> None:
    """A trained-classifier run folder as `mrisynth.classify` writes it; its penultimate layer is a space."""
    import yaml

    from mrisynth.classify import build_classifier
    from mrisynth.classify.checkpoint import save_best

    run = tmp_path / "clf"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"classifier": {"model": "tiny", "image_size": 24}}))
    save_best(build_classifier("tiny", 3), run, classes=["glioma", "meningioma", "pituitary"])
    syn = _write_synthetic(tiny_manifest_dir, tmp_path / "syn")
    result = run_audit(_config(feature_spaces=["stats", "classifier"]), real_dir=tiny_manifest_dir,
                       synthetic_dir=syn, out_dir=tmp_path / "a", classifier_dir=run)
    clf = result["feature_spaces"]["classifier"]
    assert clf["overall"]["dim"] == 32 and np.isfinite(clf["overall"]["fd"]) and clf["overall"]["fd"] > 0
    assert result["memorisation"]["features"]["classifier"]["nearest"]["max"] <= 1.0 + 1e-6
    # 18 training images in 32 dimensions: the audit says FD is unreliable rather than failing.
    assert any("classifier" in w and "fewer samples" in w for w in result["warnings"])


def test_capping_images_per_class_never_hides_a_copy(tiny_manifest_dir: Path, tmp_path: Path) -> None:
    real = load_cache(tiny_manifest_dir, SIZE)
    writer = SyntheticWriter(tmp_path / "syn", real.classes, generator_sha256="test")
    for n, i in enumerate(real.indices("train")):  # every training image, mirrored
        writer.add(np.ascontiguousarray(real.images[i][:, ::-1]), image_id=f"copy-{n}",
                   class_name=real.records[i].class_name, seed=n, steps=1)
    writer.finish()
    result = run_audit(_config(max_per_class=2), real_dir=tiny_manifest_dir, synthetic_dir=tmp_path / "syn",
                       out_dir=tmp_path / "a")
    assert result["counts"]["train"] == {c: 2 for c in real.classes} and result["counts"]["train_searched"] == 18
    assert result["memorisation"]["pixel"]["n_above"] == 6  # all 6 audited synthetic images are copies


def test_audit_rerun_reuses_features_and_gives_same_result(tiny_manifest_dir: Path, tmp_path: Path) -> None:
    syn = _write_synthetic(tiny_manifest_dir, tmp_path / "syn")
    first = run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=syn, out_dir=tmp_path / "a")
    assert (tmp_path / "a" / "features" / "stats.npz").is_file()
    second = run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=syn, out_dir=tmp_path / "a")
    assert json.dumps(first, sort_keys=True, default=str) == json.dumps(second, sort_keys=True, default=str)


def test_second_synthetic_set_with_the_same_ids_is_not_given_cached_features(
        tiny_manifest_dir: Path, tmp_path: Path) -> None:
    """Synthetic ids repeat between sets (syn-<class>-N): the feature cache must tell the sets apart by content."""
    first = _write_synthetic(tiny_manifest_dir, tmp_path / "syn1", seed=1)
    second = _write_synthetic(tiny_manifest_dir, tmp_path / "syn2", seed=2)  # same ids, other pixels
    run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=first, out_dir=tmp_path / "shared")
    reused = run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=second, out_dir=tmp_path / "shared")
    fresh = run_audit(_config(), real_dir=tiny_manifest_dir, synthetic_dir=second, out_dir=tmp_path / "fresh")
    assert reused["feature_spaces"]["stats"] == fresh["feature_spaces"]["stats"]
    assert reused["memorisation"]["features"] == fresh["memorisation"]["features"]


def test_cli_audit(tiny_manifest_dir: Path, tmp_path: Path, capsys) -> None:
    syn = _write_synthetic(tiny_manifest_dir, tmp_path / "syn")
    out = tmp_path / "audit"
    code = main(["audit", "--real", str(tiny_manifest_dir), "--synthetic", str(syn), "--out", str(out),
                 "--set", f"image_size={SIZE}", "--set", "distances.n_bootstrap=3", "--set", "diversity_pairs=10"])
    assert code == 0
    text = capsys.readouterr().out
    assert "stats: FD synthetic" in text and "1 synthetic image(s)" in text
    assert "classifier' skipped" in text  # no --classifier given
    assert (out / "quality.json").is_file()
    code = main(["audit", "--real", str(tiny_manifest_dir), "--synthetic", str(tmp_path / "nothing"),
                 "--out", str(out)])
    assert code == 2
    assert "no manifest" in capsys.readouterr().err
