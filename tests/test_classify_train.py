import csv
import json

import numpy as np
import pytest
import torch

from mrisynth.classify import ClassifierConfig, TrainData, evaluate, fit, load_classifier
from mrisynth.cli import main
from mrisynth.config import load_config
from mrisynth.data.manifest import load_manifest, save_manifest
from mrisynth.errors import UserError
from mrisynth.generate.output import SyntheticWriter, synthetic_id

TIMING = {"seconds", "train_seconds"}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than two on the busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(*overrides: str) -> ClassifierConfig:
    # 16 px keeps each epoch at a few ms of compute on a shared CPU
    return load_config(ClassifierConfig, preset="tiny", overrides=["image_size=16", *overrides])


def _records(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "train_images_per_second")}


@pytest.fixture
def synthetic_dir(tmp_path, tiny_manifest_dir):
    """A synthetic set at another native size (24 px) with the real data's classes, 2 images per class."""
    classes = json.loads((tiny_manifest_dir / "classes.json").read_text())["classes"]
    writer = SyntheticWriter(tmp_path / "syn", classes, generator_sha256="0" * 64)
    rng = np.random.default_rng(1)
    for name in classes:
        for i in range(2):
            writer.add(rng.integers(0, 256, (24, 24), dtype=np.uint8), image_id=synthetic_id(name, i),
                       class_name=name, seed=i, steps=1)
    writer.finish()
    return tmp_path / "syn"


def test_fit_writes_the_run_folder_and_returns_saved_result(tiny_manifest_dir, tmp_path):
    run = tmp_path / "run"
    result = fit(_cfg(), TrainData(real_dir=tiny_manifest_dir), run)
    for name in ("config.yaml", "metrics.jsonl", "result.json", "predictions.csv", "best.safetensors", "last.pt"):
        assert (run / name).is_file(), name
    assert result["epochs_run"] == 2 and result["train_real"] == 18 and result["train_synthetic"] == 0
    assert result["test"]["count"] == 9 and result["val"]["count"] == 9
    assert set(result["test"]) >= {"accuracy", "f1_macro", "mcc", "auc_ovr", "confusion", "per_class"}
    assert [r["epoch"] for r in _records(run)] == [0, 1]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(_records(run)[0])
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert [r["split"] for r in rows].count("test") == 9 and len(rows) == 18
    assert {"id", "true_class", "pred_class", "prob_glioma"} <= set(rows[0])
    # done runs are not retrained
    stamp = (run / "result.json").stat().st_mtime_ns
    assert fit(_cfg(), TrainData(real_dir=tiny_manifest_dir), run) == result
    assert (run / "result.json").stat().st_mtime_ns == stamp
    # the reloaded best model reproduces the saved test probabilities
    model, info = load_classifier(run)
    assert info["classes"] == ["glioma", "meningioma", "pituitary"]
    cache_images = torch.from_numpy(np.load(tiny_manifest_dir / "cache/resize-16/images.npy"))
    test_rows = [i for i, r in enumerate(load_manifest(tiny_manifest_dir)) if r.split == "test"]
    _, probs = evaluate(model, cache_images[test_rows], torch.zeros(9, dtype=torch.long), batch_size=4, device="cpu")
    saved = np.array([[float(r[f"prob_{c}"]) for c in info["classes"]] for r in rows if r["split"] == "test"])
    np.testing.assert_allclose(probs, saved, atol=1e-5)


def test_same_seed_same_metrics_other_seed_differs(tiny_manifest_dir, tmp_path):
    data = TrainData(real_dir=tiny_manifest_dir)
    a, b = fit(_cfg(), data, tmp_path / "a"), fit(_cfg(), data, tmp_path / "b")
    fit(_cfg("seed=7"), data, tmp_path / "c")
    assert _strip(a) == _strip(b) and _records(tmp_path / "a") == _records(tmp_path / "b")
    assert _records(tmp_path / "a") != _records(tmp_path / "c")


def test_resume_after_interruption_equals_uninterrupted_run(tiny_manifest_dir, tmp_path):
    data = TrainData(real_dir=tiny_manifest_dir)
    cfg = _cfg("epochs=4", "early_stopping_patience=null")
    full = fit(cfg, data, tmp_path / "full")

    def crash_after_second_epoch(record: dict) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path / "resumed", callback=crash_after_second_epoch)
    assert not (tmp_path / "resumed" / "result.json").exists()
    assert len(_records(tmp_path / "resumed")) == 2
    resumed = fit(cfg, data, tmp_path / "resumed")
    assert _strip(resumed) == _strip(full)
    assert _records(tmp_path / "resumed") == _records(tmp_path / "full")
    # a resumable (unfinished) folder refuses other settings too
    (tmp_path / "resumed" / "result.json").unlink()
    with pytest.raises(UserError, match="other settings"):
        fit(_cfg("epochs=5"), data, tmp_path / "resumed")


def test_finished_run_refuses_other_settings_and_returns_the_same(tiny_manifest_dir, tmp_path):
    data, run = TrainData(real_dir=tiny_manifest_dir), tmp_path / "run"
    result = fit(_cfg("epochs=1"), data, run)
    with pytest.raises(UserError, match=f"{run}.*other settings"):
        fit(_cfg("epochs=1", "lr=0.01"), data, run)  # must not print the old result as if it were new
    assert fit(_cfg("epochs=1"), data, run) == result


def test_training_loss_goes_down(tiny_manifest_dir, tmp_path):
    cfg = _cfg("epochs=12", "augment.enabled=false", "early_stopping_patience=null", "lr=0.01", "batch_size=6")
    fit(cfg, TrainData(real_dir=tiny_manifest_dir), tmp_path / "run")
    losses = [r["train_loss"] for r in _records(tmp_path / "run")]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_synthetic_mixing_synthetic_only_and_oversampling(tiny_manifest_dir, synthetic_dir, tmp_path):
    mixed = fit(_cfg("epochs=1"), TrainData(real_dir=tiny_manifest_dir, synthetic_dir=synthetic_dir), tmp_path / "m")
    assert (mixed["train_real"], mixed["train_synthetic"]) == (18, 6)
    only = TrainData(real_dir=tiny_manifest_dir, synthetic_dir=synthetic_dir, real_train_ids=[],
                     synthetic_ids=[synthetic_id("glioma", 0), synthetic_id("pituitary", 1)], samples_per_epoch=20)
    result = fit(_cfg("epochs=1"), only, tmp_path / "s")
    assert (result["train_real"], result["train_synthetic"]) == (0, 2)
    assert _records(tmp_path / "s")[0]["images"] == 20  # oversampled to samples_per_epoch


def test_bad_input_is_a_user_error(tiny_manifest_dir, synthetic_dir, tmp_path):
    data = TrainData(real_dir=tiny_manifest_dir)
    with pytest.raises(UserError, match="not in the real train split"):
        fit(_cfg(), TrainData(real_dir=tiny_manifest_dir, real_train_ids=["glioma-3-0"]), tmp_path / "a")
    with pytest.raises(UserError, match="training set is empty"):
        fit(_cfg(), TrainData(real_dir=tiny_manifest_dir, real_train_ids=[]), tmp_path / "b")
    with pytest.raises(UserError, match="batch_size must be at least 1"):
        fit(_cfg("batch_size=0"), data, tmp_path / "c")
    (synthetic_dir / "classes.json").write_text(json.dumps({"classes": ["x", "y", "z"]}))
    with pytest.raises(UserError, match="has classes"):
        fit(_cfg(), TrainData(real_dir=tiny_manifest_dir, synthetic_dir=synthetic_dir), tmp_path / "d")
    records = [r for r in load_manifest(tiny_manifest_dir) if r.split != "val"]
    save_manifest(records, tiny_manifest_dir / "manifest.csv")
    with pytest.raises(UserError, match="no 'val' rows"):
        fit(_cfg(), data, tmp_path / "e")
    with pytest.raises(UserError, match="unknown config key"):
        _cfg("epochz=3")


def test_cli_trains_and_reports_bad_input(tiny_manifest_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["classifier", "train", "--data", str(tiny_manifest_dir), "--preset", "tiny", "--out", str(out),
                 "--set", "image_size=16", "--set", "epochs=1"])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 1
    code = main(["classifier", "train", "--data", str(tmp_path / "nope"), "--preset", "tiny", "--out", str(out / "x")])
    assert code == 2 and "mrisynth: error:" in capsys.readouterr().err
