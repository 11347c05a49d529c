"""Fine-tuning an SD-family UNet (full or LoRA) on the training split, from cached latents, resumably.

Per step only the UNet runs: the VAE latents of every training image (and of its mirror image) and the class
prompt embeddings were computed once and cached in GEN/cache/. Randomness of step s (batch, flips, caption
dropout, timesteps, noise) comes from a generator seeded by (seed, s), so a resumed run replays exactly the steps
an uninterrupted one would have taken: the checkpoint (the shared schema of mrisynth.checkpoint) needs the
weights, optimizer and LR schedule.

    GEN/config.yaml  metrics.jsonl (loss, and val_* records)  cache/latents-<size>.safetensors
    GEN/checkpoints/step-XXXXXXX/  samples/*.png (drawn with the sampling recipe)  best/ (keep_best only)

A resume is refused when the settings, the model, the data folder or the train split it learned from (ids,
labels, pixels) changed. With `ema`, the average's decay is ramped up from 0 (see recipe.ema_decay_at).
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
from tqdm.auto import tqdm

from mrisynth import checkpoint
from mrisynth.config import save_config, to_dict
from mrisynth.data.cache import load_cache
from mrisynth.data.manifest import load_manifest, require_source
from mrisynth.data.normalize import normalize_images
from mrisynth.devices import resolve_device
from mrisynth.distributed import init_distributed, main_process_first
from mrisynth.errors import UserError
from mrisynth.files import append_jsonl, atomic_path, ensure_writable_dir, sha256_dir, write_json
from mrisynth.generate import GENERATOR_JSON
from mrisynth.generate.integrity import check_file_hashes, file_hashes
from mrisynth.generate.recipe import (
    ema_decay_at,
    min_snr_weights,
    offset_noise,
    training_set_fingerprint,
    weighted_mse,
)
from mrisynth.generate.resume import drop_records_after
from mrisynth.generate.sd_config import TrainConfig
from mrisynth.generate.sd_latents import class_prompts, load_or_build_train_latents
from mrisynth.generate.sd_load import (
    add_lora,
    base_checksum,
    load_scheduler_config,
    load_unet,
    resolve_model_dir,
    save_full_pipeline,
    save_lora,
)
from mrisynth.generate.sd_preview import Previews, averaged
from mrisynth.generate.validation import (
    BestKeeper,
    ValidationFn,
    check_validation_settings,
)
from mrisynth.runfolder import check_same_run
from mrisynth.seeding import derive_seed, seed_everything

if TYPE_CHECKING:  # annotations only: importing diffusers costs seconds
    from diffusers import DDPMScheduler, UNet2DConditionModel

log = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without invalidating the checkpoint.
_RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "sample_every", "device", "sample_preset", "val_every",
                      "val_per_class")


def train_sd(cfg: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
             validate: ValidationFn | None = None) -> Path:
    """Fine-tune on the train split of `data_dir` and save the generator to `out_dir`; resumes a stopped run.

    `validate`: scores a small class-balanced draw every `cfg.val_every` steps (see generate/validation.py).
    """
    check_validation_settings(val_every=cfg.val_every, val_per_class=cfg.val_per_class, keep_best=cfg.keep_best,
                              validate=validate)
    # Before anything is written (config, latent cache): refuse to continue a run of other settings.
    check_same_run(out_dir, cfg, resumable=_RESUMABLE_CHANGES)
    require_source(load_manifest(data_dir), "real", where=str(data_dir))  # never a generator of generated images
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
    train_ids = [cache.records[i].id for i in train_rows]
    pixels = normalize_images(cache.images[train_rows], cfg.normalize)  # what it learns (and what is fingerprinted)
    learned_from = training_set_fingerprint(train_ids, cache.labels[train_rows], pixels)

    prompts = class_prompts(cfg.prompt_template, cache.classes)
    with main_process_first(dist):  # the main process encodes the latents once; the others read its file
        cached = load_or_build_train_latents(
            out / "cache" / f"latents-{cfg.size}.safetensors", model_dir=model_dir,
            images=pixels, ids=train_ids, prompts=prompts, flip=cfg.flip, device=device,
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
    start = _resume(out, unet, optimizer, lr_sched, ema, fingerprint=fingerprint, learned_from=learned_from,
                    is_main=dist.is_main)
    if dist.is_main:  # only now: a refused resume (model or data changed) must leave the old config.yaml alone
        save_config(cfg, out / "config.yaml")
    previews = Previews(cfg, model_dir, data["prompt_embeds"], device) if dist.is_main else None
    best = BestKeeper(out, cfg.keep_best, resumed_step=start)
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
                                 1.0 - ema_decay_at(step, cfg.ema_decay))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            mean_loss = (dist.all_sum(loss) / dist.world_size).item()
            record = {"step": done, "loss": mean_loss, "grad_norm": grad_norm.item(), "lr": lr_sched.get_last_lr()[0]}
            if dist.is_main:
                append_jsonl(out / "metrics.jsonl", record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if previews is not None and previews.due(done):
            with averaged(trainable, ema):  # grids and validation show what will be saved
                previews.run(done, unet, out=out, validate=validate, best=best, trainable=trainable)
        if dist.is_main and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _save_checkpoint(out, done, trainable, optimizer, lr_sched, ema, fingerprint=fingerprint,
                             learned_from=learned_from)
    if not dist.is_main:
        dist.barrier()  # the main process saves the result
        return out
    if best.best is not None:  # keep_best: the generator is the best-scoring weights, not the last ones
        log.info("saving the weights of step %d (best %s)", best.best["step"], cfg.keep_best)
        ema = checkpoint.load_weights(best.folder / "weights.safetensors", device=device)
    result = _save_result(out, unet, trainable, ema, cfg=cfg, model_dir=model_dir, data_dir=data_dir,
                          classes=cache.classes, steps=cfg.steps)
    dist.barrier()
    return result


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
    noise = offset_noise(torch.randn(latents.shape, generator=gen), cfg.noise_offset, generator=gen).to(device)
    latents, noise, t, cond = latents[part], noise[part], t[part], cond[part]
    noisy = noise_sched.add_noise(latents, noise, t)
    kind = noise_sched.config.prediction_type  # epsilon or v_prediction (check_model_dir refuses the others)
    target = noise if kind == "epsilon" else noise_sched.get_velocity(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
    weights = None
    if cfg.snr_gamma > 0:
        weights = min_snr_weights(noise_sched.alphas_cumprod, t, gamma=cfg.snr_gamma, prediction_type=kind)
    return weighted_mse(pred, target, weights)


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
                     lr_sched: torch.optim.lr_scheduler.LRScheduler, ema: dict | None, *, fingerprint: str,
                     learned_from: str) -> None:
    """The shared schema (`mrisynth.checkpoint`) in checkpoints/step-N/, written under a temporary name."""
    root = out / "checkpoints"
    target = root / f"step-{step:07d}"
    with atomic_path(target, suffix="") as tmp:
        tmp.mkdir()
        checkpoint.save_weights(trainable, tmp / "weights.safetensors")  # the UNet, or only its LoRA layers
        if ema is not None:
            checkpoint.save_weights(ema, tmp / "ema.safetensors")
        checkpoint.save_state({
            "step": step, "fingerprint": fingerprint, "learned_from": learned_from, "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_sched.state_dict(), "global_rng": checkpoint.capture_rng(),
            "weights_sha256": file_hashes(tmp, ("weights.safetensors", "ema.safetensors")),
        }, tmp / "state.pt")
    for old in root.glob("step-*"):  # keep only the newest
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def _resume(out: Path, unet: UNet2DConditionModel, optimizer: torch.optim.Optimizer,
            lr_sched: torch.optim.lr_scheduler.LRScheduler, ema: dict | None, *, fingerprint: str,
            learned_from: str, is_main: bool = True) -> int:
    """Load the newest checkpoint in `out` if any; returns the step to continue from."""
    found = sorted((out / "checkpoints").glob("step-*[0-9]"))
    if not found:
        return 0
    ckpt = found[-1]
    state = checkpoint.load_state(ckpt / "state.pt")
    if state.get("learned_from", learned_from) != learned_from:
        raise UserError(
            f"{out} was trained on another train split (its ids, labels or pixels changed since: re-prepared "
            "data?); resuming would mix the two. Use a new --out, or delete its checkpoints/ folder to start over"
        )
    if state["fingerprint"] != fingerprint:
        raise UserError(
            f"{out} holds a checkpoint of a run with other settings (model, data or hyper-parameters); "
            "use a new --out, or delete its checkpoints/ folder to start over"
        )
    check_file_hashes(ckpt, state.get("weights_sha256"))
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


def _save_result(out: Path, unet: UNet2DConditionModel, trainable: dict, ema: dict | None, *, cfg: TrainConfig,
                 model_dir: Path, data_dir: Path, classes: list[str], steps: int) -> Path:
    """Save the weights (EMA ones when kept) with save_pretrained, then generator.json last."""
    if ema is not None:
        for name, p in trainable.items():
            p.data.copy_(ema[name])
    unet.eval()
    if cfg.mode == "lora":
        weights = save_lora(unet, out_dir=out)
    else:
        weights = save_full_pipeline(unet, base_dir=model_dir, out_dir=out)
    info = {
        "backend": "sd", "data_dir": str(data_dir), "classes": list(classes), "mode": cfg.mode,
        "base_model": str(model_dir), "model": cfg.model, "prompt_template": cfg.prompt_template, "size": cfg.size,
        "steps": steps, "sha256": sha256_dir(weights),  # checked before every sampling run
        "normalize": cfg.normalize,
    }
    if cfg.mode == "lora":  # the adapter is only half the model: record which base it was trained on
        info["base_sha256"] = base_checksum(model_dir)
    write_json(out / GENERATOR_JSON, info)
    log.info("saved %s generator to %s", cfg.mode, out)
    return out
