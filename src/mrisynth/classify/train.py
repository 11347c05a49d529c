"""Training one classifier: `fit` (a whole resumable run), `train_one_epoch` and `evaluate`.

    result = fit(cfg, TrainData(real_dir=Path("runs/x/data")), Path("runs/x/trials/real-s0"))

The run folder holds config.yaml, metrics.jsonl (one line per epoch), best.safetensors, last.pt (resumable),
and at the end predictions.csv and result.json. A folder with result.json is done: fit returns it untouched
(after checking that config.yaml holds the same settings: a rerun with other settings is a UserError).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mrisynth.checkpoint import capture_rng, load_state, restore_rng, save_state
from mrisynth.classify.augment import apply_augmentation, random_affine_params, to_unit_float
from mrisynth.classify.checkpoint import LAST_NAME, claim_run_dir, load_best, model_state, save_best
from mrisynth.classify.config import AugmentConfig, ClassifierConfig
from mrisynth.classify.data import DeviceSet, PreparedData, TrainData, epoch_order, load_train_data
from mrisynth.classify.metrics import classification_metrics
from mrisynth.classify.models import build_classifier
from mrisynth.classify.optim import EarlyStopping, build_optimizer, build_scheduler
from mrisynth.devices import resolve_device
from mrisynth.distributed import SINGLE_PROCESS, DistContext, init_distributed, main_process_first
from mrisynth.errors import UserError
from mrisynth.files import append_jsonl, ensure_writable_dir, read_json, write_json, write_text
from mrisynth.runfolder import CONFIG_NAME, check_same_run, start_run
from mrisynth.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
METRICS_NAME = "metrics.jsonl"
PREDICTIONS_NAME = "predictions.csv"


@dataclasses.dataclass
class RunConfig:
    """What config.yaml of a classifier run holds: the settings and the data they were applied to."""

    classifier: ClassifierConfig
    data: TrainData


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: DeviceSet,
    order: torch.Tensor,  # (samples,) indices into `train`, already shuffled
    *,
    augment: AugmentConfig,
    generator: torch.Generator,
    batch_size: int,
    label_smoothing: float = 0.0,
    amp: bool = False,
    channels_last: bool = False,
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    dist: DistContext = SINGLE_PROCESS,
    accum: int = 1,
    desc: str = "train",
) -> dict:
    """One pass over `order`: augment on the device, forward, backward, step. Returns loss/accuracy/throughput.

    `batch_size` is the global batch of one optimizer step; under data parallelism (`dist`) and/or gradient
    accumulation (`accum`) this process computes its chunks of it (see mrisynth.distributed).
    """
    model.train()
    device = train.images.device
    parts = dist.world_size * accum
    totals = torch.zeros(2, device=device)  # loss sum, correct (this process's share)
    seen = 0
    start = time.perf_counter()
    for first in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, unit="batch", disable=not dist.is_main):
        idx = order[first:first + batch_size]
        idx = idx[:len(idx) - len(idx) % parts]  # a short last batch is trimmed to split evenly (no-op for one process)
        if len(idx) == 0 or (len(idx) == parts and first > 0):
            break  # BatchNorm cannot train on a lone sample whose features are 1x1
        # Draw the whole global batch's augmentation so every process consumes the generator identically.
        params = random_affine_params(len(idx), augment, generator=generator, device=device) if augment.enabled else None
        optimizer.zero_grad(set_to_none=True)
        chunks = dist.chunks(len(idx), accum)
        for k, part in enumerate(chunks):
            rows = idx[part]
            x = apply_augmentation(train.images[rows], None if params is None else {n: v[part] for n, v in params.items()})
            y = train.labels[rows]  # x: (b, 1, S, S) in [0, 1]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with dist.no_sync(model, skip=k < len(chunks) - 1):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                (loss / accum).backward()
            # accumulate on the device: no host sync per step
            totals += torch.stack([loss.detach() * len(rows), (logits.argmax(1) == y).sum().float()])
            seen += len(rows)
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
    loss_sum, correct, seen = dist.all_sum(torch.cat([totals, totals.new_tensor([seen])])).tolist()
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1), "images": int(seen),
            "train_seconds": seconds}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images_u8: torch.Tensor | np.ndarray,  # (N, H, W) or (N, 1, H, W) uint8
    labels: torch.Tensor | np.ndarray,  # (N,) int
    *,
    batch_size: int,
    device: torch.device | str,
    classes: list[str] | None = None,
    amp: bool = False,
) -> tuple[dict, np.ndarray]:
    """Metrics (see metrics.py; `loss` is plain cross-entropy) and (N, C) probabilities, without augmentation."""
    model.eval()
    device = torch.device(device)
    images = torch.as_tensor(images_u8)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    probs = []
    for first in range(0, len(images), batch_size):
        x = to_unit_float(images[first:first + batch_size].to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
    prob = torch.cat(probs).double().numpy()
    y = torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    loss = float(-np.log(np.clip(prob[np.arange(len(y)), y], 1e-12, None)).mean()) if len(y) else float("nan")
    names = classes or [str(k) for k in range(prob.shape[1])]
    return classification_metrics(y, prob, names, loss=loss), prob


def fit(
    cfg: ClassifierConfig,
    data: TrainData,
    out_dir: Path,
    *,
    callback: Callable[[dict], None] | None = None,
) -> dict:
    """Train one classifier into `out_dir` (resuming from last.pt) and return result.json's content.

    A finished folder (result.json) is returned as it is when its config.yaml holds the same settings, and is a
    UserError when they differ. `callback(record)` is called after each epoch's checkpoint is written; raising
    from it stops the run there (a later call resumes). The folder is claimed for the run (files.claim_output_dir):
    another kind of output there, or a second training process on it, is refused.
    """
    with claim_run_dir(out_dir):
        return _fit(cfg, data, ensure_writable_dir(out_dir), callback=callback)


def _fit(cfg: ClassifierConfig, data: TrainData, out_dir: Path, *, callback: Callable[[dict], None] | None) -> dict:
    run = RunConfig(classifier=cfg, data=dataclasses.replace(
        data, real_dir=Path(data.real_dir).resolve(),
        synthetic_dir=None if data.synthetic_dir is None else Path(data.synthetic_dir).resolve(),
    ))
    if (out_dir / RESULT_NAME).is_file():
        _check_same_config(run, out_dir)
        return read_json(out_dir / RESULT_NAME)
    device = resolve_device(cfg.device)
    dist = init_distributed(backend_device=device.type)  # a world of one unless started by a launcher
    device = dist.device(device)
    if dist.is_main:
        _save_or_check_config(run, out_dir)
    on_gpu = device.type == "cuda"
    amp, channels_last = cfg.amp and on_gpu, cfg.channels_last and on_gpu
    seed_everything(cfg.seed, deterministic=cfg.deterministic)

    with main_process_first(dist):  # the main process builds missing caches; the others then read them
        sets = load_train_data(run.data, image_size=cfg.image_size, device=device, normalize=cfg.normalize,
                               fit=cfg.fit)
    model = build_classifier(cfg.model, len(sets.classes), weights=cfg.weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    samples = run.data.samples_per_epoch or cfg.samples_per_epoch or len(sets.train)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=math.ceil(samples / cfg.batch_size))
    progress = _resume(cfg, out_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    if dist.is_main:
        # metrics.jsonl mirrors the checkpointed history (a crash between the two writes leaves no stray line)
        write_text(out_dir / METRICS_NAME, "")
        for record in progress.history:
            append_jsonl(out_dir / METRICS_NAME, record)

    # Wrapped only after resuming: data parallelism broadcasts the main process's (restored) weights.
    net = dist.wrap(model)
    net = torch.compile(net) if cfg.compile and on_gpu else net
    session = _Session(cfg=cfg, out_dir=out_dir, sets=sets, model=model, net=net, optimizer=optimizer,
                       scheduler=scheduler, device=device, dist=dist, samples=samples, amp=amp,
                       channels_last=channels_last)
    _run_epochs(session, progress, callback=callback)

    if not dist.is_main:
        dist.barrier()  # wait for the main process to evaluate and write result.json
        return read_json(out_dir / RESULT_NAME)
    result = _finish(model, cfg, sets, out_dir, history=progress.history, stopper=progress.stopper, device=device,
                     amp=amp)
    dist.barrier()
    return result


_Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None


@dataclasses.dataclass
class _Progress:
    """Where a run stands: the next epoch to train, early stopping, and one record per finished epoch."""

    stopper: EarlyStopping
    history: list[dict]
    next_epoch: int = 0


@dataclasses.dataclass
class _Session:
    """What the epoch loop works on, built once by `fit`."""

    cfg: ClassifierConfig
    out_dir: Path
    sets: PreparedData
    model: nn.Module  # the plain module: checkpoints and best weights are saved from it
    net: nn.Module  # what trains and evaluates: `model`, wrapped for data parallelism and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: _Scheduler
    device: torch.device
    dist: DistContext
    samples: int  # training samples per epoch
    amp: bool
    channels_last: bool


def _resume(
    cfg: ClassifierConfig,
    out_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: _Scheduler,
) -> _Progress:
    """Restore model, optimizer, scheduler and RNG states from last.pt when it exists; else a fresh start."""
    if not (out_dir / LAST_NAME).is_file():
        return _Progress(stopper=EarlyStopping(cfg.early_stopping_patience), history=[])
    state = load_state(out_dir / LAST_NAME)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    log.info("resuming %s after epoch %d", out_dir, state["epoch"])
    return _Progress(stopper=EarlyStopping(**state["early_stopping"]), history=list(state["history"]),
                     next_epoch=state["epoch"] + 1)


def _run_epochs(s: _Session, progress: _Progress, *, callback: Callable[[dict], None] | None) -> None:
    """Train, validate and checkpoint epoch after epoch until `cfg.epochs` or early stopping."""
    cfg, dist = s.cfg, s.dist
    per_step = isinstance(s.scheduler, torch.optim.lr_scheduler.LambdaLR)
    gen_device = s.device if s.device.type == "cuda" else torch.device("cpu")
    for epoch in range(progress.next_epoch, cfg.epochs):
        if progress.stopper.stopped:
            break
        t0 = time.perf_counter()
        # Each epoch draws from its own seed, so a resumed run sees the same shuffles and augmentations
        # (and every data-parallel process the same global batches).
        generator = torch.Generator(device=gen_device).manual_seed(derive_seed(cfg.seed, "epoch", epoch))
        order = epoch_order(len(s.sets.train), s.samples, generator=generator).to(s.device)
        lr = s.optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(
            s.net, s.optimizer, s.sets.train, order, augment=cfg.augment, generator=generator,
            batch_size=cfg.batch_size, label_smoothing=cfg.label_smoothing, amp=s.amp, channels_last=s.channels_last,
            step_scheduler=s.scheduler if per_step else None, dist=dist, accum=cfg.grad_accum_steps,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
        )
        # Every process evaluates (identical weights, identical data) so all take the same stopping decisions.
        val, _ = evaluate(s.net, s.sets.val.images, s.sets.val.labels, batch_size=cfg.eval_batch_size,
                          device=s.device, classes=s.sets.classes, amp=s.amp)
        if isinstance(s.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            s.scheduler.step(val["loss"])
        if progress.stopper.update(val["loss"], epoch) and dist.is_main:
            save_best(s.model, s.out_dir, classes=s.sets.classes)
        record = {"epoch": epoch, **stats, "val_loss": val["loss"], "val_acc": val["accuracy"], "lr": lr,
                  "seconds": time.perf_counter() - t0}
        progress.history.append(record)
        progress.next_epoch = epoch + 1
        if dist.is_main:
            save_state({
                "model": model_state(s.model), "optimizer": s.optimizer.state_dict(),
                "scheduler": s.scheduler.state_dict() if s.scheduler is not None else {},
                "early_stopping": dataclasses.asdict(progress.stopper), "history": progress.history,
                "rng": capture_rng(), "epoch": epoch,
            }, s.out_dir / LAST_NAME)
            append_jsonl(s.out_dir / METRICS_NAME, record)
        log.info("epoch %d: train loss %.4f acc %.3f | val loss %.4f acc %.3f", epoch + 1, stats["train_loss"],
                 stats["train_acc"], val["loss"], val["accuracy"])
        dist.barrier()  # checkpoint complete before anyone moves on (or is killed)
        if callback is not None:
            callback(record)


def _finish(
    model: nn.Module,
    cfg: ClassifierConfig,
    sets: PreparedData,
    out_dir: Path,
    *,
    history: list[dict],
    stopper: EarlyStopping,
    device: torch.device,
    amp: bool,
) -> dict:
    """Evaluate the kept weights on val and test, write predictions.csv and result.json."""
    t0 = time.perf_counter()
    if cfg.restore_best:
        if stopper.best_epoch < 0:
            raise UserError(f"no epoch of {out_dir} reached a finite validation loss (training diverged); "
                            "lower lr and use a new --out")
        load_best(model, out_dir)
    else:
        save_best(model, out_dir, classes=sets.classes)
    rows, results = [], {}
    for split, part in (("test", sets.test), ("val", sets.val)):
        metrics, probs = evaluate(model, part.images, part.labels, batch_size=cfg.eval_batch_size, device=device,
                                  classes=sets.classes, amp=amp)
        results[split] = metrics
        rows.append((split, part, probs))
    _write_predictions(out_dir / PREDICTIONS_NAME, rows, sets.classes)
    train_seconds = sum(r["train_seconds"] for r in history)
    result = {
        **results,
        "best_epoch": stopper.best_epoch if cfg.restore_best else history[-1]["epoch"],
        "epochs_run": len(history),
        "stopped_early": stopper.stopped,
        "train_real": sets.train_real,
        "train_synthetic": sets.train_synthetic,
        "seconds": sum(r["seconds"] for r in history) + time.perf_counter() - t0,
        "train_images_per_second": sum(r["images"] for r in history) / max(train_seconds, 1e-9),
        "classes": sets.classes,
        "device": str(device),
    }
    write_json(out_dir / RESULT_NAME, result)
    return result


def _write_predictions(path: Path, rows: list[tuple[str, DeviceSet, np.ndarray]], classes: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "id", "true_class", "pred_class", *[f"prob_{c}" for c in classes]])
    for split, part, probs in rows:
        for image_id, label, p in zip(part.ids, part.labels.tolist(), probs):
            writer.writerow([split, image_id, classes[label], classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    write_text(path, buffer.getvalue())


def _save_or_check_config(run: RunConfig, out_dir: Path) -> None:
    """Write config.yaml; refuse to resume a folder whose run had other settings (mrisynth.runfolder)."""
    if (out_dir / LAST_NAME).is_file():
        _check_same_config(run, out_dir)
    start_run(out_dir, run)


def _check_same_config(run: RunConfig, out_dir: Path) -> None:
    """A UserError naming `out_dir` when its config.yaml holds other settings than `run` (or is missing)."""
    if not (out_dir / CONFIG_NAME).is_file():
        raise UserError(f"{out_dir} holds a run without {CONFIG_NAME}, so its settings are unknown; "
                        "use a new --out folder or delete it")
    check_same_run(out_dir, run)
