"""Training the class-conditional DDPM on the train split, with checkpoints that resume bit-for-bit on the CPU.

    GEN/config.yaml          resolved TrainConfig
    GEN/metrics.jsonl        loss curve (one line per `log_every` steps)
    GEN/samples/*.png        preview grids from the EMA model, one row per class, with the sampling recipe
    GEN/metrics.jsonl        also {"step", "val_*"} records every `val_every` steps (generate/validation.py)
    GEN/best/                the best-scoring EMA weights (keep_best only); they become GEN/unet/
    GEN/checkpoint/          unet.safetensors, ema.safetensors, state.pt (optimizer, lr schedule, RNG, step)
    GEN/unet/ GEN/scheduler/ the final EMA model and noise schedule (`save_pretrained` folders)
    GEN/generator.json       {"backend": "ddpm", "data_dir", "classes", "image_size", "sha256"}

All randomness of a step (batch indices, flips, label dropout, noise, timesteps) comes from one torch.Generator
whose state is checkpointed, so "N steps straight" and "k steps, crash, resume to N" give identical weights.
A resume is refused when the train split it learned from (ids, labels, pixels) changed since.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from mrisynth import checkpoint
from mrisynth.config import save_config
from mrisynth.data.cache import load_cache
from mrisynth.data.manifest import load_manifest, require_source
from mrisynth.data.normalize import normalize_images
from mrisynth.devices import resolve_device
from mrisynth.distributed import init_distributed, main_process_first
from mrisynth.errors import UserError
from mrisynth.files import (
    append_jsonl,
    atomic_path,
    ensure_writable_dir,
    sha256_dir,
    write_json,
)
from mrisynth.generate import GENERATOR_JSON
from mrisynth.generate.ddpm_config import SampleConfig, TrainConfig
from mrisynth.generate.ddpm_model import (
    autocast,
    build_noise_scheduler,
    build_sampler,
    build_unet,
    denoise,
    ema_decay_at,
    save_grid,
    seeded_noise,
    to_model_space,
    to_uint8_images,
    update_ema,
)
from mrisynth.generate.integrity import check_file_hashes, file_hashes
from mrisynth.generate.output import claim_generator_dir
from mrisynth.generate.recipe import (
    min_snr_weights,
    offset_noise,
    sample_recipe,
    training_set_fingerprint,
    weighted_mse,
)
from mrisynth.generate.resume import drop_records_after
from mrisynth.generate.validation import (
    BestKeeper,
    ValidationFn,
    check_validation_settings,
    validation_draw,
    validation_record,
)
from mrisynth.runfolder import check_same_run
from mrisynth.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
_WEIGHT_FILES = ("unet.safetensors", "ema.safetensors")
# Settings that may differ when a run is resumed: they change neither the model nor the random stream.
_MAY_CHANGE = ("steps", "log_every", "checkpoint_every", "grid_every", "grid_per_class", "grid_steps", "device",
               "compile", "sample_preset", "val_every", "val_per_class")


@dataclasses.dataclass
class TrainingData:
    """The train split, resident on the training device."""

    images: torch.Tensor  # (N, 1, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    fingerprint: str = ""  # of the train split's ids, labels and pixels: a resume must learn from the same ones


@dataclasses.dataclass
class TrainState:
    """Everything a checkpoint holds."""

    unet: UNet2DModel
    ema: UNet2DModel
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    rng: torch.Generator
    step: int = 0


def load_training_data(data_dir: str | os.PathLike, cfg: TrainConfig, *, device: torch.device) -> TrainingData:
    """The train split of a prepared data folder at `cfg.image_size`, as uint8 on `device` (1/4 of fp32 memory)."""
    cache = load_cache(data_dir, cfg.image_size, fit=cfg.fit)
    rows = cache.indices("train")
    if len(rows) == 0:
        raise UserError(f"{data_dir} has no images in the train split; run `mrisynth data prepare` with a split")
    pixels = np.ascontiguousarray(normalize_images(cache.images[rows], cfg.normalize))  # what it learns, fingerprinted
    fingerprint = training_set_fingerprint([cache.records[i].id for i in rows], cache.labels[rows], pixels)
    images = torch.from_numpy(pixels)[:, None]
    labels = torch.from_numpy(cache.labels[rows])
    return TrainingData(images=images.to(device), labels=labels.to(device), classes=cache.classes,
                        fingerprint=fingerprint)


def draw_batch(data: TrainingData, cfg: TrainConfig, *, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch: (B, 1, S, S) in [-1, 1], randomly flipped, and (B,) labels with some set to "no class"."""
    device = data.images.device
    idx = torch.randint(len(data.images), (cfg.batch_size,), generator=rng, device=device)
    x = data.images[idx]
    flip = torch.rand(cfg.batch_size, generator=rng, device=device) < (0.5 if cfg.hflip else 0.0)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = x.float() / 127.5 - 1.0
    null_label = len(data.classes)
    drop = torch.rand(cfg.batch_size, generator=rng, device=device) < cfg.p_uncond
    labels = torch.where(drop, torch.full_like(data.labels[idx], null_label), data.labels[idx])
    return x, labels


def draw_noise(
    noise_scheduler: DDPMScheduler, x0: torch.Tensor, *, patch: int, rng: torch.Generator, offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and timesteps for a batch `x0` (B, 1, S, S): drawn once per step, for the whole global batch."""
    shape = to_model_space(x0[:1], patch).shape[1:]
    noise = torch.randn((len(x0), *shape), generator=rng, device=x0.device)
    t = torch.randint(noise_scheduler.config.num_train_timesteps, (len(x0),), generator=rng, device=x0.device)
    return offset_noise(noise, offset, generator=rng), t


def diffusion_loss(
    model: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    x0: torch.Tensor,  # (B, 1, S, S) in [-1, 1]
    labels: torch.Tensor,  # (B,)
    *,
    patch: int,
    noise: torch.Tensor,  # (B, p*p, S/p, S/p), from draw_noise
    t: torch.Tensor,  # (B,)
    snr_gamma: float = 0.0,
) -> torch.Tensor:
    """MSE between the model's prediction and the true noise (or velocity) at timesteps `t` (Min-SNR-weighted
    when snr_gamma > 0).

    Data-parallel processes call it on their part of one global batch (rows of x0, labels, noise, t alike).
    """
    x0 = to_model_space(x0, patch)  # (B, p*p, S/p, S/p)
    xt = noise_scheduler.add_noise(x0, noise, t)
    target = noise if noise_scheduler.config.prediction_type == "epsilon" else noise_scheduler.get_velocity(x0, noise, t)
    with autocast(x0.device):
        pred = model(xt, t, class_labels=labels).sample
    kind = noise_scheduler.config.prediction_type
    weights = None
    if snr_gamma > 0:
        weights = min_snr_weights(noise_scheduler.alphas_cumprod, t, gamma=snr_gamma, prediction_type=kind)
    return weighted_mse(pred, target, weights)


def build_state(cfg: TrainConfig, n_classes: int, *, device: torch.device) -> TrainState:
    """Fresh model, EMA copy, optimizer, warm-up schedule and random stream, all from `cfg.seed`."""
    seed_everything(cfg.seed)
    unet = build_unet(cfg, n_classes).to(device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.warmup_steps)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    rng = torch.Generator(device).manual_seed(cfg.seed)
    return TrainState(unet=unet, ema=ema, optimizer=optimizer, lr_schedule=lr_schedule, rng=rng)


def save_checkpoint(state: TrainState, path: Path, *, data_dir: str, learned_from: str) -> None:
    """The shared schema (`mrisynth.checkpoint`) in one folder, written to a temporary name, then renamed."""
    with atomic_path(path, suffix="") as tmp:
        tmp.mkdir()
        checkpoint.save_weights(state.unet.state_dict(), tmp / "unet.safetensors")
        checkpoint.save_weights(state.ema.state_dict(), tmp / "ema.safetensors")
        checkpoint.save_state({
            "step": state.step,
            "optimizer": state.optimizer.state_dict(),
            "lr_schedule": state.lr_schedule.state_dict(),
            "rng": state.rng.get_state(),
            "global_rng": checkpoint.capture_rng(),
            "data_dir": data_dir,
            "learned_from": learned_from,
            "weights_sha256": file_hashes(tmp, _WEIGHT_FILES),
        }, tmp / "state.pt")


def load_checkpoint(state: TrainState, path: Path, *, data_dir: str, learned_from: str) -> None:
    """Restore `state` in place from `save_checkpoint` output (safe loading only)."""
    extra = checkpoint.load_state(path / "state.pt")
    if extra["data_dir"] != data_dir:
        raise UserError(f"{path} was trained on {extra['data_dir']}, not {data_dir}; use a new --out folder")
    if extra.get("learned_from", learned_from) != learned_from:
        raise UserError(
            f"{path} was trained on another train split of {data_dir} (its ids, labels or pixels changed since: "
            "re-prepared data?); resuming would mix the two. Use a new --out, or delete the checkpoint folder"
        )
    check_file_hashes(path, extra.get("weights_sha256"))
    device = next(state.unet.parameters()).device
    state.unet.load_state_dict(checkpoint.load_weights(path / "unet.safetensors", device=device))
    state.ema.load_state_dict(checkpoint.load_weights(path / "ema.safetensors", device=device))
    state.optimizer.load_state_dict(extra["optimizer"])
    state.lr_schedule.load_state_dict(extra["lr_schedule"])
    state.rng.set_state(extra["rng"])
    checkpoint.restore_rng(extra["global_rng"])
    state.step = int(extra["step"])


def draw_images(ema: UNet2DModel, noise_scheduler: DDPMScheduler, recipe: SampleConfig, labels: np.ndarray,
                seeds: list[int], *, size: int, steps: int | None = None) -> np.ndarray:
    """(N, S, S) uint8 images from the EMA model with a sampling recipe, in batches of the recipe's size."""
    out = []
    for i in range(0, len(labels), recipe.batch_size):
        sampler = build_sampler(recipe.sampler, noise_scheduler.config)
        x = denoise(ema, sampler, torch.as_tensor(labels[i:i + recipe.batch_size]),
                    seeded_noise(seeds[i:i + recipe.batch_size], size), steps=steps or recipe.steps,
                    guidance=recipe.guidance)
        out.append(to_uint8_images(x))
    return np.concatenate(out)


def save_training_grid(ema: UNet2DModel, noise_scheduler: DDPMScheduler, cfg: TrainConfig, *, n_classes: int,
                       path: Path) -> None:
    """A preview PNG from the EMA model: one row per class, the same seeds every time (so grids compare).

    Drawn with the sampling recipe's sampler and guidance (cfg.sample_preset), in cfg.grid_steps steps."""
    per = cfg.grid_per_class
    labels = np.repeat(np.arange(n_classes), per)
    seeds = [derive_seed("ddpm-grid", i) for i in range(per)] * n_classes
    images = draw_images(ema, noise_scheduler, sample_recipe(SampleConfig, cfg.sample_preset), labels, seeds,
                         size=cfg.image_size, steps=cfg.grid_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_grid(images, tmp, rows=n_classes)


def validate_step(state: TrainState, noise_scheduler: DDPMScheduler, cfg: TrainConfig, *, n_classes: int,
                  validate: ValidationFn, best: BestKeeper, metrics: Path) -> None:
    """Score a class-balanced draw of the EMA model with the sampling recipe; keep the best EMA weights."""
    labels, seeds = validation_draw(n_classes, cfg.val_per_class)
    images = draw_images(state.ema, noise_scheduler, sample_recipe(SampleConfig, cfg.sample_preset), labels, seeds,
                         size=cfg.image_size)
    record = validation_record(state.step, images, labels, validate)
    append_jsonl(metrics, record)
    if best.improves(record):
        best.save(record, lambda folder: checkpoint.save_weights(state.ema.state_dict(), folder / "ema.safetensors"))


def save_generator(state: TrainState, noise_scheduler: DDPMScheduler, cfg: TrainConfig, *, classes: list[str],
                   data_dir: str, out: Path) -> None:
    """The final EMA model and schedule as `save_pretrained` folders, then generator.json (written last)."""
    with atomic_path(out / "unet", suffix="") as tmp:
        state.ema.save_pretrained(tmp, safe_serialization=True)
    with atomic_path(out / "scheduler", suffix="") as tmp:
        noise_scheduler.save_pretrained(tmp)
    write_json(out / GENERATOR_JSON, {
        "backend": "ddpm", "data_dir": data_dir, "classes": classes, "image_size": cfg.image_size,
        "steps": state.step, "sha256": sha256_dir(out / "unet"), "normalize": cfg.normalize,
    })


def run_train(cfg: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
              validate: ValidationFn | None = None) -> Path:
    """Train (or resume training) a DDPM on the train split of `data_dir`; returns the generator folder.

    `validate(images, labels) -> {"val_...": float}` scores a small draw every `cfg.val_every` steps."""
    check_validation_settings(val_every=cfg.val_every, val_per_class=cfg.val_per_class, keep_best=cfg.keep_best,
                              validate=validate)
    require_source(load_manifest(data_dir), "real", where=str(data_dir))  # never a generator of generated images
    with claim_generator_dir(out_dir):
        return _train(cfg, data_dir=data_dir, out_dir=out_dir, validate=validate)


def _train(cfg: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
           validate: ValidationFn | None) -> Path:
    out = ensure_writable_dir(out_dir)
    data_dir = str(Path(data_dir).resolve())
    check_same_run(out, cfg, resumable=_MAY_CHANGE)
    device = resolve_device(cfg.device)
    dist = init_distributed(backend_device=device.type)  # a world of one unless started by a launcher
    device = dist.device(device)
    if dist.is_main:
        save_config(cfg, out / "config.yaml")
    with main_process_first(dist):  # the main process builds a missing cache, the others then read it
        data = load_training_data(data_dir, cfg, device=device)
    n_classes = len(data.classes)
    state = build_state(cfg, n_classes, device=device)
    noise_scheduler = build_noise_scheduler(cfg)
    metrics = out / "metrics.jsonl"
    if (out / CHECKPOINT_DIR).is_dir():
        load_checkpoint(state, out / CHECKPOINT_DIR, data_dir=data_dir, learned_from=data.fingerprint)
        log.info("resuming %s from step %d", out, state.step)
        if dist.is_main:
            drop_records_after(metrics, state.step)  # those steps are about to be redone
    elif metrics.exists() and dist.is_main:
        metrics.unlink()
    best = BestKeeper(out, cfg.keep_best, resumed_step=state.step)
    dist.barrier()

    model = state.unet
    if device.type == "cuda":  # GPU fast path; the CPU path stays plain so it is bit-for-bit reproducible
        model = model.to(memory_format=torch.channels_last)
    model = dist.wrap(model)
    if device.type == "cuda" and cfg.compile:
        model = torch.compile(model)
    chunks = dist.chunks(cfg.batch_size, cfg.grad_accum_steps)
    log.info("training on %d images, %d classes, %s, %d steps", len(data.images), n_classes, device, cfg.steps)
    losses: list[torch.Tensor] = []
    tick = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="ddpm train", unit="step", disable=not dist.is_main)
    while state.step < cfg.steps:
        x0, labels = draw_batch(data, cfg, rng=state.rng)  # the global batch: the same on every process
        noise, t = draw_noise(noise_scheduler, x0, patch=cfg.patch, rng=state.rng, offset=cfg.noise_offset)
        state.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for k, part in enumerate(chunks):
            with dist.no_sync(model, skip=k < len(chunks) - 1):
                loss = diffusion_loss(model, noise_scheduler, x0[part], labels[part], patch=cfg.patch,
                                      noise=noise[part], t=t[part], snr_gamma=cfg.snr_gamma)
                (loss / len(chunks)).backward()
            step_loss += loss.detach() / len(chunks)
        torch.nn.utils.clip_grad_norm_(state.unet.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.lr_schedule.step()
        update_ema(state.ema, state.unet, decay=ema_decay_at(state.step, cfg.ema_decay))
        state.step += 1
        losses.append(step_loss)  # no .item() per step: it would stall the GPU queue
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            mean_loss = (dist.all_sum(torch.stack(losses).mean()) / dist.world_size).item()
            now = time.perf_counter()
            if dist.is_main:
                append_jsonl(metrics, {
                    "step": state.step, "loss": mean_loss, "lr": state.lr_schedule.get_last_lr()[0],
                    "images_per_s": len(losses) * cfg.batch_size / max(now - tick, 1e-9),
                })
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            losses, tick = [], now
        if dist.is_main and (state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps):
            save_checkpoint(state, out / CHECKPOINT_DIR, data_dir=data_dir, learned_from=data.fingerprint)
        if dist.is_main and cfg.grid_every and state.step % cfg.grid_every == 0:
            save_training_grid(state.ema, noise_scheduler, cfg, n_classes=n_classes,
                               path=out / "samples" / f"step-{state.step:06d}.png")
        if dist.is_main and validate is not None and (state.step % cfg.val_every == 0 or state.step == cfg.steps):
            validate_step(state, noise_scheduler, cfg, n_classes=n_classes, validate=validate, best=best,
                          metrics=metrics)
    bar.close()
    if dist.is_main and best.best is not None:  # keep_best: the generator is the best-scoring EMA weights
        log.info("saving the EMA weights of step %d (best %s)", best.best["step"], cfg.keep_best)
        state.ema.load_state_dict(checkpoint.load_weights(best.folder / "ema.safetensors", device=device))
    if dist.is_main:
        save_training_grid(state.ema, noise_scheduler, cfg, n_classes=n_classes, path=out / "samples" / "final.png")
        save_generator(state, noise_scheduler, cfg, classes=data.classes, data_dir=data_dir, out=out)
    dist.barrier()
    log.info("generator saved to %s", out)
    return out
