"""Fine-tuning an SD-family UNet (full or LoRA) on the training split, from cached latents, resumably.

Per step only the UNet runs: the VAE latents of every training image (and of its mirror image) and the class
prompt embeddings were computed once and cached in GEN/cache/. Randomness of step s (batch, flips, caption
dropout, timesteps, noise) comes from a generator seeded by (seed, s), so a resumed run replays exactly the steps
an uninterrupted one would have taken: the checkpoint (the shared schema of mrisynth.checkpoint) needs the
weights, optimizer and LR schedule.

    GEN/config.yaml  metrics.jsonl  cache/latents-<size>.safetensors  checkpoints/step-XXXXXXX/  samples/*.png
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mrisynth import checkpoint
from mrisynth.config import save_config, to_dict
from mrisynth.data.cache import load_cache
from mrisynth.data.images import save_grayscale_png
from mrisynth.devices import resolve_device
from mrisynth.distributed import init_distributed, main_process_first
from mrisynth.errors import UserError
from mrisynth.files import append_jsonl, atomic_path, ensure_writable_dir, write_json
from mrisynth.generate import GENERATOR_JSON
from mrisynth.generate.resume import check_resume_settings, drop_records_after
from mrisynth.generate.sd import TrainConfig
from mrisynth.generate.sd_latents import class_prompts, decode_latents, load_or_build_train_latents
from mrisynth.generate.sd_load import (
    add_lora,
    load_scheduler_config,
    load_unet,
    load_vae,
    resolve_model_dir,
    save_full_pipeline,
    save_lora,
)
from mrisynth.generate.sd_sample import build_scheduler, denoise, initial_noise
from mrisynth.seeding import derive_seed, seed_everything

if TYPE_CHECKING:  # annotations only: importing diffusers costs seconds
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without invalidating the checkpoint.
_RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "sample_every", "device")


def train_sd(cfg: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fine-tune on the train split of `data_dir` and save the generator to `out_dir`; resumes a stopped run."""
    _check(cfg)
    # Before anything is written (config, latent cache): refuse to continue a run of other settings.
    check_resume_settings(Path(out_dir) / "config.yaml", cfg, may_change=_RESUMABLE_CHANGES)
    out = ensure_writable_dir(out_dir)
    data_dir = Path(data_dir).resolve()
    device = resolve_device(cfg.device)
    dist = init_distributed(backend_device=device.type)  # a world of one unless started by a launcher
    device = dist.device(device)
    seed_everything(cfg.seed)
    model_dir = resolve_model_dir(cfg.model)
    cache = load_cache(data_dir, cfg.size)
    train_rows = cache.indices("train")
    if len(train_rows) == 0:
        raise UserError(f"{data_dir} has no images in the train split; run `mrisynth data prepare` with a split")

    prompts = class_prompts(cfg.prompt_template, cache.classes)
    with main_process_first(dist):  # the main process encodes the latents once; the others read its file
        cached = load_or_build_train_latents(
            out / "cache" / f"latents-{cfg.size}.safetensors", model_dir=model_dir,
            images=cache.images[train_rows], ids=[cache.records[i].id for i in train_rows], prompts=prompts,
            flip=cfg.flip, device=device,
        )
    data = {k: v.to(device) for k, v in cached.items()}
    labels = torch.from_numpy(cache.labels[train_rows]).to(device)

    unet = _build_unet(model_dir, cfg, device)
    trainable = {name: p for name, p in unet.named_parameters() if p.requires_grad}
    noise_sched = _noise_schedule(load_scheduler_config(model_dir))
    optimizer = torch.optim.AdamW(trainable.values(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")  # one kernel for all parameters on a GPU
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)))
    ema = {n: p.detach().clone().float() for n, p in trainable.items()} if cfg.ema else None
    fingerprint = _fingerprint(cfg, model_dir, data_dir)
    start = _resume(out, unet, optimizer, lr_sched, ema, fingerprint=fingerprint, is_main=dist.is_main)
    if dist.is_main:  # only now: a refused resume (model or data changed) must leave the old config.yaml alone
        save_config(cfg, out / "config.yaml")
    vae = load_vae(model_dir).to(device) if cfg.sample_every > 0 and dist.is_main else None  # sample grids only
    net = dist.wrap(unet)
    chunks = dist.chunks(cfg.batch_size, cfg.grad_accum_steps)

    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    unet.train()
    bar = tqdm(range(start, cfg.steps), desc="fine-tune", initial=start, total=cfg.steps, disable=not dist.is_main)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for k, part in enumerate(chunks):
            with dist.no_sync(net, skip=k < len(chunks) - 1):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    micro = _loss(net, noise_sched, data, labels, cfg, step=step, device=device, part=part)
                (micro / len(chunks)).backward()
            loss += micro.detach() / len(chunks)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable.values(), cfg.grad_clip)
        optimizer.step()
        lr_sched.step()
        if ema is not None:
            torch._foreach_lerp_(list(ema.values()), [p.detach().float() for p in trainable.values()],
                                 1.0 - cfg.ema_decay)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            mean_loss = (dist.all_sum(loss) / dist.world_size).item()
            record = {"step": done, "loss": mean_loss, "grad_norm": grad_norm.item(), "lr": lr_sched.get_last_lr()[0]}
            if dist.is_main:
                append_jsonl(out / "metrics.jsonl", record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if dist.is_main and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _save_checkpoint(out, done, trainable, optimizer, lr_sched, ema, fingerprint=fingerprint)
        if vae is not None and done % cfg.sample_every == 0:
            _save_grid(out / "samples" / f"grid-{done:07d}.png", unet, vae, data["prompt_embeds"], model_dir,
                       size=cfg.size)
    if not dist.is_main:
        dist.barrier()  # the main process saves the result
        return out
    result = _save_result(out, unet, trainable, ema, cfg=cfg, model_dir=model_dir, data_dir=data_dir,
                          classes=cache.classes)
    dist.barrier()
    return result


def _check(cfg: TrainConfig) -> None:
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.checkpoint_every < 1 or cfg.log_every < 1:
        raise UserError("steps, batch_size, checkpoint_every and log_every must be at least 1")
    if cfg.size % 8:
        raise UserError(f"size must be a multiple of 8 (the VAE downsamples by 8); got {cfg.size}")
    if "{cls}" not in cfg.prompt_template:
        raise UserError(f"prompt_template must contain {{cls}}; got '{cfg.prompt_template}'")
    if not 0.0 <= cfg.caption_dropout < 1.0:
        raise UserError(f"caption_dropout must be in [0, 1); got {cfg.caption_dropout}")


def _build_unet(model_dir: Path, cfg: TrainConfig, device: torch.device) -> UNet2DConditionModel:
    unet = load_unet(model_dir)  # fp32 master weights; bf16 comes from autocast
    if cfg.mode == "lora":
        add_lora(unet, rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=list(cfg.lora_targets))
    else:
        unet.requires_grad_(True)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet.to(device)


def _noise_schedule(config: dict) -> DDPMScheduler:
    """The DDPM forward process on the model's own betas (whatever sampler it ships with)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config)


def _loss(unet: torch.nn.Module, noise_sched: DDPMScheduler, data: dict, labels: torch.Tensor, cfg: TrainConfig, *, step: int,
          device: torch.device, part: slice = slice(None)) -> torch.Tensor:
    """Denoising loss of one batch; every random choice comes from the generator of this step.

    Everything is drawn for the whole (global) batch, then `part` of it is computed: data-parallel processes
    each take their part of the same batch (mrisynth.distributed).
    """
    gen = torch.Generator("cpu").manual_seed(derive_seed("sd-train", cfg.seed, step))
    rows = torch.from_numpy(_batch_rows(len(labels), cfg.batch_size, step=step, seed=cfg.seed)).to(device)
    b = len(rows)
    latents = data["latents"][rows]  # (B, C, h, w)
    if cfg.flip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(device).view(b, 1, 1, 1)
        latents = torch.where(flip, data["latents_flip"][rows], latents)
    embeds = data["prompt_embeds"]  # (P + 1, L, D); the last row is the empty prompt
    drop = (torch.rand(b, generator=gen) < cfg.caption_dropout).to(device)
    cond = embeds[torch.where(drop, len(embeds) - 1, labels[rows])]  # (B, L, D)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=gen).to(device)
    noise = torch.randn(latents.shape, generator=gen).to(device)
    latents, noise, t, cond = latents[part], noise[part], t[part], cond[part]
    noisy = noise_sched.add_noise(latents, noise, t)
    kind = noise_sched.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_sched.get_velocity(latents, noise, t)
    else:  # "sample"
        target = latents
    pred = unet(noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
    return F.mse_loss(pred.float(), target.float())


def _batch_rows(n: int, batch: int, *, step: int, seed: int) -> np.ndarray:
    """Rows of batch `step`: consecutive slices of one shuffled order per epoch (a pure function of step)."""
    rows: list[int] = []
    position = step * batch
    while len(rows) < batch:
        epoch, offset = divmod(position + len(rows), n)
        order = np.random.default_rng(derive_seed("sd-epoch", seed, epoch)).permutation(n)
        rows.extend(order[offset:offset + batch - len(rows)].tolist())
    return np.array(rows, dtype=np.int64)


def _fingerprint(cfg: TrainConfig, model_dir: Path, data_dir: Path) -> str:
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _RESUMABLE_CHANGES}
    blob = json.dumps([settings, str(model_dir), str(data_dir)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_checkpoint(out: Path, step: int, trainable: dict, optimizer: torch.optim.Optimizer,
                     lr_sched: torch.optim.lr_scheduler.LRScheduler, ema: dict | None, *, fingerprint: str) -> None:
    """The shared schema (`mrisynth.checkpoint`) in checkpoints/step-N/, written under a temporary name."""
    root = out / "checkpoints"
    target = root / f"step-{step:07d}"
    with atomic_path(target, suffix="") as tmp:
        tmp.mkdir()
        checkpoint.save_weights(trainable, tmp / "weights.safetensors")  # the UNet, or only its LoRA layers
        if ema is not None:
            checkpoint.save_weights(ema, tmp / "ema.safetensors")
        checkpoint.save_state({
            "step": step, "fingerprint": fingerprint, "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_sched.state_dict(), "global_rng": checkpoint.capture_rng(),
        }, tmp / "state.pt")
    for old in root.glob("step-*"):  # keep only the newest
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def _resume(out: Path, unet: UNet2DConditionModel, optimizer: torch.optim.Optimizer,
            lr_sched: torch.optim.lr_scheduler.LRScheduler, ema: dict | None, *, fingerprint: str,
            is_main: bool = True) -> int:
    """Load the newest checkpoint in `out` if any; returns the step to continue from."""
    found = sorted((out / "checkpoints").glob("step-*[0-9]"))
    if not found:
        return 0
    ckpt = found[-1]
    state = checkpoint.load_state(ckpt / "state.pt")
    if state["fingerprint"] != fingerprint:
        raise UserError(
            f"{out} holds a checkpoint of a run with other settings (model, data or hyper-parameters); "
            "use a new --out, or delete its checkpoints/ folder to start over"
        )
    device = next(unet.parameters()).device
    _, unexpected = unet.load_state_dict(checkpoint.load_weights(ckpt / "weights.safetensors", device=device),
                                               strict=False)
    if unexpected:
        raise UserError(f"checkpoint {ckpt} does not match this model ({unexpected[0]}); use a new --out")
    optimizer.load_state_dict(state["optimizer"])
    lr_sched.load_state_dict(state["lr_scheduler"])
    checkpoint.restore_rng(state["global_rng"])  # per-step draws do not use it; restored for anything that does
    if ema is not None:
        ema.update(checkpoint.load_weights(ckpt / "ema.safetensors", device=device))
    step = int(state["step"])
    if is_main:  # forget metrics logged after the checkpoint: those steps are about to be replayed
        drop_records_after(out / "metrics.jsonl", step)
    log.info("resumed from %s", ckpt)
    return step


@torch.no_grad()
def _save_grid(path: Path, unet: UNet2DConditionModel, vae: AutoencoderKL, embeds: torch.Tensor, model_dir: Path, *, size: int, steps: int = 4) -> None:
    """One image per class side by side (fixed seeds, so grids of different steps compare)."""
    unet.eval()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    n = len(embeds) - 1
    shape = (unet.config.in_channels, size // factor, size // factor)
    noise, generators = initial_noise([derive_seed("sd-grid", i) for i in range(n)], shape)
    scheduler = build_scheduler(load_scheduler_config(model_dir), name="euler", spacing="trailing")
    latents = denoise(unet, scheduler, noise, embeds[:n], steps=steps, generators=generators)
    images = decode_latents(vae, latents)  # (n, H, W) uint8
    ensure_writable_dir(path.parent)
    with atomic_path(path) as tmp:
        save_grayscale_png(np.concatenate(list(images), axis=1), tmp)
    unet.train()


def _save_result(out: Path, unet: UNet2DConditionModel, trainable: dict, ema: dict | None, *, cfg: TrainConfig, model_dir: Path,
                 data_dir: Path, classes: list[str]) -> Path:
    """Save the weights (EMA ones when kept) with save_pretrained, then generator.json last."""
    if ema is not None:
        for name, p in trainable.items():
            p.data.copy_(ema[name])
    unet.eval()
    if cfg.mode == "lora":
        save_lora(unet, out_dir=out)
    else:
        save_full_pipeline(unet, base_dir=model_dir, out_dir=out)
    write_json(out / GENERATOR_JSON, {
        "backend": "sd", "data_dir": str(data_dir), "classes": list(classes), "mode": cfg.mode,
        "base_model": str(model_dir), "model": cfg.model, "prompt_template": cfg.prompt_template, "size": cfg.size,
    })
    log.info("saved %s generator to %s", cfg.mode, out)
    return out
