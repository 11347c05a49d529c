"""The reference recipe's callbacks (Keras semantics) and the fast preset's schedule."""

import json

import pytest
import torch

from mrisynth.classify import CLASSIFIER_PRESETS, ClassifierConfig, TrainData, fit
from mrisynth.classify.optim import EarlyStopping, build_scheduler
from mrisynth.config import load_config, merge_dicts


def test_plateau_halves_lr_on_the_third_bad_epoch_down_to_min():
    cfg = ClassifierConfig(lr=1e-6)  # seed recipe: factor 0.5, patience 3, min 1e-7
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=1)
    lrs = []
    for loss in [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] + [0.5] * 12:
        scheduler.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    # Keras: wait reaches patience=3 on the 3rd epoch without improvement -> reduce, wait resets
    assert lrs[:4] == [1e-6, 1e-6, 1e-6, 5e-7]
    assert lrs[4:7] == [5e-7] * 3 and lrs[7] == pytest.approx(2.5e-7)
    assert lrs[-1] == pytest.approx(1e-7)  # floored at min_lr


def test_early_stopping_waits_patience_epochs_and_remembers_best():
    stopper = EarlyStopping(patience=5)
    losses = [1.0, 0.8, 0.9, 0.85, 0.81, 0.8, 0.95]  # 0.8 again is not an improvement
    flags = [stopper.update(v, epoch) for epoch, v in enumerate(losses)]
    assert flags == [True, True, False, False, False, False, False]
    assert stopper.stopped and stopper.best_epoch == 1 and stopper.best_loss == 0.8
    assert not EarlyStopping(patience=None).update(float("nan"), 0)


def test_fast_preset_runs_on_cpu_with_warmup_then_cosine(tiny_manifest_dir, tmp_path):
    torch.set_num_threads(1)
    base = merge_dicts(CLASSIFIER_PRESETS["fast"], CLASSIFIER_PRESETS["tiny"])
    cfg = load_config(ClassifierConfig, base=base, overrides=[
        "image_size=16", "epochs=5", "warmup_epochs=2", "batch_size=9", "lr=0.01", "min_lr=0.0001"])
    assert cfg.optimizer == "adamw" and cfg.label_smoothing > 0 and cfg.compile  # GPU switches ignored on CPU
    fit(cfg, TrainData(real_dir=tiny_manifest_dir), tmp_path / "run")
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # lr at the start of each epoch: warm-up from 1/4 of peak (2 steps per epoch, 4 warm-up steps), then decay
    assert lrs[0] == pytest.approx(0.0025) and lrs[1] == pytest.approx(0.0075)
    assert lrs[2] == pytest.approx(0.01) and lrs[2] > lrs[3] > lrs[4] > 0.0001


@pytest.mark.gpu
def test_fast_preset_on_gpu_uses_bf16_channels_last_compile(tiny_manifest_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    base = merge_dicts(CLASSIFIER_PRESETS["fast"], CLASSIFIER_PRESETS["tiny"])
    cfg = load_config(ClassifierConfig, base=base, overrides=["epochs=2", "batch_size=9", "device=cuda"])
    result = fit(cfg, TrainData(real_dir=tiny_manifest_dir), tmp_path / "run")
    assert result["device"].startswith("cuda") and result["epochs_run"] == 2
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
