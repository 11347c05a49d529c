"""The reference recipe's callbacks (Keras semantics) and the fast preset's schedule."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from mrisynth.checkpoint import load_state, load_weights
from mrisynth.classify import ClassifierConfig, TrainData, build_classifier, fit, load_classifier
from mrisynth.classify import train as train_module
from mrisynth.classify.config import AugmentConfig
from mrisynth.classify.data import DeviceSet
from mrisynth.classify.optim import EarlyStopping, build_scheduler
from mrisynth.classify.train import evaluate as real_evaluate
from mrisynth.classify.train import train_one_epoch
from mrisynth.classify.train import train_one_epoch as real_train_one_epoch
from mrisynth.config import from_dict, load_config, merge_dicts, parse_overrides, preset_values
from mrisynth.data.cache import load_cache


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
    base = merge_dicts(preset_values(ClassifierConfig, "fast"), preset_values(ClassifierConfig, "tiny"))
    cfg = from_dict(ClassifierConfig, merge_dicts(base, parse_overrides([
        "image_size=16", "epochs=5", "warmup_epochs=2", "batch_size=9", "lr=0.01", "min_lr=0.0001"])))
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
    base = merge_dicts(preset_values(ClassifierConfig, "fast"), preset_values(ClassifierConfig, "tiny"))
    cfg = load_config(ClassifierConfig, base=base, overrides=["epochs=2", "batch_size=9", "device=cuda"])
    run = tmp_path / "run"
    result = fit(cfg, TrainData(real_dir=tiny_manifest_dir), run)
    assert result["device"].startswith("cuda") and result["epochs_run"] == 2
    # What was scored on the GPU (bf16, channels_last, compiled) is what the saved best model gives on the CPU:
    # the fast path must not score other weights or other images than it saves.
    model, info = load_classifier(run)
    cache = load_cache(tiny_manifest_dir, info["image_size"])
    test = cache.indices("test")
    _, probs = real_evaluate(model, cache.images[test], cache.labels[test], batch_size=64, device="cpu")
    rows = [r for r in csv.DictReader(open(run / "predictions.csv")) if r["split"] == "test"]
    saved = np.array([[float(r[f"prob_{c}"]) for c in info["classes"]] for r in rows])
    np.testing.assert_allclose(saved, probs, atol=0.03)  # bf16 autocast against fp32
    assert [r["id"] for r in rows] == [cache.records[i].id for i in test]


# ---- the recipe as a user relies on it, through `fit` ---------------------------------------------------------
# Validation losses are scripted (the first `evaluate` calls of a run, one per epoch, get the given loss) so the
# best epoch, the early stop and the LR drops land where each test needs them; everything else is real training.

def _tiny(**changes) -> ClassifierConfig:
    """The tiny preset's settings at 16 px, built without the config loader (its API is not what is tested)."""
    base = {"model": "tiny", "image_size": 16, "epochs": 2, "batch_size": 8, "eval_batch_size": 64}
    return dataclasses.replace(ClassifierConfig(), **{**base, **changes})


def _script_val_losses(monkeypatch: pytest.MonkeyPatch, losses: list[float]) -> None:
    """The next len(losses) calls of the trainer's `evaluate` report these losses; later calls are untouched."""
    script = list(losses)

    def scripted(*args, **kwargs):
        metrics, probs = real_evaluate(*args, **kwargs)
        if script:
            metrics = {**metrics, "loss": script.pop(0)}
        return metrics, probs

    monkeypatch.setattr(train_module, "evaluate", scripted)


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_restore_best_scores_the_weights_of_the_best_middle_epoch(tiny_manifest_dir, tmp_path, monkeypatch):
    _script_val_losses(monkeypatch, [0.9, 0.5, 0.7, 0.8])  # best epoch: 1 of 0..3
    run, snapshots = tmp_path / "run", {}

    def keep_weights(record: dict) -> None:  # last.pt holds the weights at the end of this epoch
        snapshots[record["epoch"]] = load_state(run / "last.pt")["model"]

    result = fit(_tiny(epochs=4, early_stopping_patience=None), TrainData(real_dir=tiny_manifest_dir), run,
                 callback=keep_weights)
    assert [r["val_loss"] for r in _metrics(run)] == [0.9, 0.5, 0.7, 0.8]
    assert result["best_epoch"] == 1 and result["epochs_run"] == 4 and not result["stopped_early"]
    best = load_weights(run / "best.safetensors")
    assert all(torch.equal(best[k], snapshots[1][k]) for k in snapshots[1])
    assert not all(torch.equal(best[k], snapshots[3][k]) for k in snapshots[3])  # training moved on after it
    # What result.json and predictions.csv score is epoch 1's model, not the last one.
    model = build_classifier("tiny", 3)
    model.load_state_dict(snapshots[1])
    cache = load_cache(tiny_manifest_dir, 16)
    test = cache.indices("test")
    metrics, probs = real_evaluate(model, cache.images[test], cache.labels[test], batch_size=64, device="cpu")
    rows = [r for r in csv.DictReader(open(run / "predictions.csv")) if r["split"] == "test"]
    saved = np.array([[float(r[f"prob_{c}"]) for c in ("glioma", "meningioma", "pituitary")] for r in rows])
    np.testing.assert_allclose(saved, probs, atol=1e-5)
    assert result["test"]["accuracy"] == metrics["accuracy"]


def test_early_stopping_stops_the_run_patience_epochs_after_the_best(tiny_manifest_dir, tmp_path, monkeypatch):
    _script_val_losses(monkeypatch, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])  # never better than epoch 0
    run = tmp_path / "run"
    result = fit(_tiny(epochs=6, early_stopping_patience=2), TrainData(real_dir=tiny_manifest_dir), run)
    assert result["epochs_run"] == 3 and result["stopped_early"] and result["best_epoch"] == 0
    assert [r["epoch"] for r in _metrics(run)] == [0, 1, 2]


def test_a_plateau_lr_drop_survives_a_resume(tiny_manifest_dir, tmp_path, monkeypatch):
    # Keras plateau patience 2: the 2nd epoch without a better val loss (epoch 2) halves the LR for epoch 3.
    cfg = _tiny(epochs=5, early_stopping_patience=None, lr=0.01, plateau_patience=2, plateau_factor=0.5)
    losses = [1.0, 1.1, 1.2, 1.3, 1.4]
    expected = [0.01, 0.01, 0.01, 0.005, 0.005]  # lr at the start of each epoch
    data = TrainData(real_dir=tiny_manifest_dir)
    _script_val_losses(monkeypatch, losses)
    fit(cfg, data, tmp_path / "full")
    assert [r["lr"] for r in _metrics(tmp_path / "full")] == pytest.approx(expected)

    def crash_after_epoch_1(record: dict) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    _script_val_losses(monkeypatch, losses[:2])
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path / "resumed", callback=crash_after_epoch_1)
    # After the resume the scheduler must still count epoch 1 as a bad epoch (its best is epoch 0's 1.0).
    _script_val_losses(monkeypatch, losses[2:])
    fit(cfg, data, tmp_path / "resumed")
    assert [r["lr"] for r in _metrics(tmp_path / "resumed")] == pytest.approx(expected)


def test_every_epoch_draws_a_new_shuffle_and_a_rerun_the_same(tiny_manifest_dir, tmp_path, monkeypatch):
    orders: list[list[int]] = []

    def recording(model, optimizer, train, order, **kwargs):
        orders.append(order.tolist())
        return real_train_one_epoch(model, optimizer, train, order, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", recording)
    cfg = _tiny(epochs=3, early_stopping_patience=None)
    fit(cfg, TrainData(real_dir=tiny_manifest_dir), tmp_path / "a")
    fit(cfg, TrainData(real_dir=tiny_manifest_dir), tmp_path / "b")
    first, second = orders[:3], orders[3:]
    assert all(sorted(o) == list(range(18)) for o in first)  # each epoch is one pass over the 18 train images
    assert len({tuple(o) for o in first}) == 3  # three epochs, three different orders
    assert second == first  # the same seed replays the same orders


class _Recorder(nn.Module):
    """A linear classifier that keeps every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16 * 16, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def _one_epoch_inputs(augment: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model saw in one epoch over 8 images, and those images rescaled without augmentation."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 16, 16), generator=g, dtype=torch.uint8)
    data = DeviceSet(images=images, labels=torch.arange(8) % 3, ids=[str(i) for i in range(8)])
    model = _Recorder()
    order = torch.arange(8)
    train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), data, order, augment=augment,
                    generator=torch.Generator().manual_seed(1), batch_size=4)
    return torch.cat(model.seen), images.float() / 255


def test_training_batches_are_augmented_unless_augmentation_is_off():
    seen, plain = _one_epoch_inputs(AugmentConfig())
    # every image is changed (flip, rotation, shift ... drawn per image), not just some of the batch
    assert all(not torch.allclose(s, p, atol=1e-3) for s, p in zip(seen, plain))
    seen_off, plain = _one_epoch_inputs(AugmentConfig(enabled=False))
    torch.testing.assert_close(seen_off, plain, atol=0, rtol=0)


def test_fit_applies_the_configured_augmentation(tiny_manifest_dir, tmp_path):
    data = TrainData(real_dir=tiny_manifest_dir)
    fit(_tiny(epochs=1), data, tmp_path / "on")
    fit(_tiny(epochs=1, augment=AugmentConfig(enabled=False)), data, tmp_path / "off")
    fit(_tiny(epochs=1), data, tmp_path / "on-again")
    on, off, again = (_metrics(tmp_path / n)[0]["train_loss"] for n in ("on", "off", "on-again"))
    assert on == again and on != off


class _FixedLogits(nn.Module):
    """Logits (2, 0, 0) for every image whatever it shows; lr 0 keeps them there."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([2.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), 3)


def test_label_smoothing_enters_the_training_loss():
    # True class 0 with logits (2, 0, 0): -log p0 = log(1 + 2 e^-2) = 0.23954, -log p1 = -log p2 = 2.23954.
    # Smoothing 0.3 over 3 classes: 0.7 x 0.23954 + 0.3 x mean(0.23954, 2.23954, 2.23954) = 0.63954.
    images = torch.zeros(8, 1, 16, 16, dtype=torch.uint8)
    data = DeviceSet(images=images, labels=torch.zeros(8, dtype=torch.long), ids=[str(i) for i in range(8)])
    losses = []
    for smoothing in (0.0, 0.3):
        model = _FixedLogits()
        stats = train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), data, torch.arange(8),
                                augment=AugmentConfig(enabled=False), generator=torch.Generator().manual_seed(0),
                                batch_size=4, label_smoothing=smoothing)
        losses.append(stats["train_loss"])
        assert stats["train_acc"] == 1.0 and stats["images"] == 8
    assert losses == pytest.approx([0.23954, 0.63954], abs=1e-5)
