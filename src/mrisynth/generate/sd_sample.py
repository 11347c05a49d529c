"""Sampling a trained SD generator: the denoising loop written out, batched, one seed (and generator) per image.

Text-to-image (default `finetuned`: 30 Euler steps with guidance 2; `turbo`: 1 step, for un-tuned or re-distilled
models only) or image-to-image (`seed`: a random training image of the same class, noised to `strength` and
denoised with guidance). Provenance records the steps that ran (for img2img, int(steps x strength)). Each image's noise
comes from its own `torch.Generator` seeded with the recorded seed, so any image can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from mrisynth.config import save_config
from mrisynth.data.cache import load_cache
from mrisynth.data.images import fit_square
from mrisynth.devices import resolve_device
from mrisynth.errors import UserError
from mrisynth.generate import read_generator_info
from mrisynth.generate.output import SyntheticWriter, synthetic_id
from mrisynth.generate.recipe import per_class_counts, uses_guidance
from mrisynth.generate.sd_config import SampleConfig, executed_steps
from mrisynth.generate.sd_latents import (
    class_prompts,
    decode_latents,
    encode_images,
    encode_prompts,
    non_finite_message,
)
from mrisynth.generate.sd_load import (
    generator_parts,
    load_generator_unet,
    load_scheduler_config,
    load_text_stack,
    load_vae,
    verified_checksum,
)
from mrisynth.runfolder import check_same_run
from mrisynth.seeding import derive_seed

if TYPE_CHECKING:  # annotations only: importing diffusers costs seconds
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel

log = logging.getLogger(__name__)

# A rerun may change how the work is cut up and run, not what each image is (fp16 vs fp32 would: `precision` stays).
_MAY_CHANGE = ("n_per_class", "counts", "batch_size", "device", "compile", "compile_mode", "channels_last", "decode_batch")

_FEW_STEPS = 4  # 1-4 steps: the distilled regime that a plain fine-tune does not preserve
_SCHEDULERS = {"euler_ancestral": "EulerAncestralDiscreteScheduler", "euler": "EulerDiscreteScheduler",
               "ddim": "DDIMScheduler"}


def build_scheduler(config: dict, *, name: str = "euler_ancestral", spacing: str = "trailing") -> SchedulerMixin:
    """A sampling scheduler on the model's noise schedule (betas, prediction type), with the chosen spacing."""
    import diffusers

    cls = getattr(diffusers, _SCHEDULERS[name])
    return cls.from_config(config, timestep_spacing=spacing)


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """(B, *shape) float32 CPU noise, image i from its own generator seeded seeds[i]; the generators continue."""
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    return noise, generators


@torch.no_grad()
def denoise(
    unet: UNet2DConditionModel,
    scheduler: SchedulerMixin,
    noise: torch.Tensor,  # (B, C, h, w)
    cond: torch.Tensor,  # (B, L, D) prompt embeddings
    *,
    steps: int,
    generators: list[torch.Generator],
    guidance: float = 1.0,
    uncond: torch.Tensor | None = None,  # (B, L, D), needed when guidance > 1
    init_latents: torch.Tensor | None = None,  # (B, C, h, w): image-to-image when given
    strength: float = 1.0,
) -> torch.Tensor:
    """Run the reverse diffusion and return clean latents (B, C, h, w) in the UNet's dtype."""
    device, dtype = cond.device, cond.dtype
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    noise = noise.to(device, dtype)
    if init_latents is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        # Skip the first (1 - strength) of the schedule and start from the source image noised to that level,
        # as diffusers' img2img pipeline does; fewer than one step left is refused (it would start from noise).
        run = executed_steps(steps, strength)
        if run < 1:
            raise ValueError(f"img2img with steps={steps}, strength={strength} runs no step")
        skip = (steps - run) * scheduler.order
        timesteps = timesteps[skip:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skip)
        latents = scheduler.add_noise(init_latents.to(device, dtype), noise, timesteps[:1].repeat(len(noise)))
    use_cfg = uses_guidance(guidance)
    if use_cfg:
        if uncond is None:
            raise ValueError("guidance > 1 needs unconditional embeddings")
        cond = torch.cat([uncond, cond])
    for t in timesteps:
        x = torch.cat([latents, latents]) if use_cfg else latents
        x = scheduler.scale_model_input(x, t)
        eps = unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]
        if use_cfg:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents, generator=generators, return_dict=False)[0]
    return latents


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on a GPU, fp32 on the CPU (half precision on the CPU is slow and not what anyone wants)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision in ("fp16", "bf16") and device.type != "cuda":
        raise UserError(f"precision={precision} needs a GPU; use --set precision=fp32 on the CPU")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def speed_up(
    unet: UNet2DConditionModel, vae: AutoencoderKL, cfg: SampleConfig, device: torch.device
) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """GPU speed paths, each behind a flag: channels_last memory layout and torch.compile of UNet and decoder."""
    if device.type != "cuda":
        return unet, vae
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if cfg.compile:
        unet = torch.compile(unet, mode=cfg.compile_mode)
        vae.decode = torch.compile(vae.decode, mode=cfg.compile_mode)
    return unet, vae


def sample_sd(gen_dir: str | os.PathLike, cfg: SampleConfig, *, out_dir: str | os.PathLike) -> Path:
    """Write the requested images per class from the generator in `gen_dir` to `out_dir` (resumable)."""
    info = read_generator_info(gen_dir)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    classes = list(info["classes"])
    wanted = per_class_counts(classes, n_per_class=cfg.n_per_class, counts=cfg.counts)
    # Before anything is written: a resumed set must not mix settings (and its config.yaml must stay true).
    check_same_run(out_dir, cfg, resumable=_MAY_CHANGE)
    warn_if_few_steps(info, executed_steps(cfg.steps, cfg.strength if cfg.mode == "img2img" else None))
    checksum = verified_checksum(gen_dir, info)  # weights changed since training are refused here
    with SyntheticWriter(out_dir, classes, generator_sha256=checksum) as writer:
        save_config(cfg, writer.out_dir / "config.yaml")
        jobs = _plan(wanted, cfg, writer.existing_ids())
        if jobs:
            _generate(jobs, gen_dir, info, cfg, writer, device=device, dtype=dtype)
        keep = {synthetic_id(c, i) for c, n in wanted.items() for i in range(n)}
        return writer.finish(keep=keep).parent


def warn_if_few_steps(info: dict, steps: int) -> None:
    """Warn loudly when a fine-tuned generator is sampled in 1-4 steps (see sd_config.py for why)."""
    if steps <= _FEW_STEPS and int(info.get("steps", 1)) > 0:
        log.warning(
            "sampling a fine-tuned SD generator in %d step(s): after a plain denoising fine-tune, 1-4 step samples "
            "are blurred averages of training images, not new ones; use the default multi-step recipe "
            "(--preset finetuned: %d steps) unless this model was re-distilled for few-step sampling",
            steps, SampleConfig().steps,
        )


def _plan(wanted: dict[str, int], cfg: SampleConfig, done: set[str]) -> list[tuple[int, str, int]]:
    """(label, image id, seed) of every image still to make."""
    jobs = []
    for label, (name, n) in enumerate(wanted.items()):
        for i in range(n):
            image_id = synthetic_id(name, i)
            if image_id not in done:
                jobs.append((label, image_id, derive_seed("sd-sample", cfg.seed, name, i)))
    return jobs


@dataclasses.dataclass
class _Sampler:
    """Everything needed to turn (label, seed) pairs into images: loaded once per sampling run."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: SchedulerMixin
    embeds: torch.Tensor  # (C + 1, L, D): one per class, then the empty prompt
    shape: tuple[int, int, int]  # latent (C, h, w)

    def images(self, labels: torch.Tensor, seeds: list[int], cfg: SampleConfig, *, init: torch.Tensor | None = None,
               decode_batch: int = 0) -> np.ndarray:
        """(B, H, W) uint8 images; non-finite latents (fp16 overflow) are an error, never black PNGs."""
        noise, generators = initial_noise(seeds, self.shape)
        latents = denoise(
            self.unet, self.scheduler, noise, self.embeds[labels], steps=cfg.steps, generators=generators,
            guidance=cfg.guidance, uncond=self.embeds[-1:].expand(len(seeds), -1, -1), init_latents=init,
            strength=cfg.strength if init is not None else 1.0,
        )
        if not torch.isfinite(latents).all():
            raise UserError(non_finite_message("denoising"))
        return decode_latents(self.vae, latents, batch_size=decode_batch)


def build_sampler(unet: UNet2DConditionModel, vae: AutoencoderKL, embeds: torch.Tensor, model_dir: Path,
                  cfg: SampleConfig, *, size: int) -> _Sampler:
    """A `_Sampler` on the model's noise schedule, with the recipe's scheduler and spacing."""
    scheduler = build_scheduler(load_scheduler_config(model_dir), name=cfg.scheduler, spacing=cfg.timestep_spacing)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return _Sampler(unet, vae, scheduler, embeds, (unet.config.in_channels, size // factor, size // factor))


def _generate(jobs: list[tuple[int, str, int]], gen_dir: str | os.PathLike, info: dict, cfg: SampleConfig,
              writer: SyntheticWriter, *, device: torch.device, dtype: torch.dtype) -> None:
    classes = list(info["classes"])
    model_dir, _ = generator_parts(gen_dir, info)
    prompts = class_prompts(info["prompt_template"], classes)
    tokenizer, text_encoder = load_text_stack(model_dir)
    embeds = encode_prompts(tokenizer, text_encoder, [*prompts, ""], device=device).to(device, dtype)  # (C+1, L, D)
    del tokenizer, text_encoder
    unet = load_generator_unet(gen_dir, info, dtype=dtype).to(device)
    vae = load_vae(model_dir, dtype=dtype).to(device)
    sources = _SourcePicker(info, vae, device) if cfg.mode == "img2img" else None
    unet, vae = speed_up(unet, vae, cfg, device)
    size = int(info["size"])
    sampler = build_sampler(unet, vae, embeds, model_dir, cfg, size=size)
    out_size = cfg.size or size
    strength = cfg.strength if sources is not None else None
    steps_run = executed_steps(cfg.steps, strength)
    # A compiled UNet recompiles for each new batch size: pad the last batch to the full size instead.
    pad_to = cfg.batch_size if (device.type == "cuda" and cfg.compile) else 0
    for start in tqdm(range(0, len(jobs), cfg.batch_size), desc="sample", unit="batch"):
        batch = jobs[start:start + cfg.batch_size]
        real = len(batch)
        batch = batch + [batch[-1]] * max(0, pad_to - real)
        labels = torch.tensor([b[0] for b in batch], device=device)
        seeds = [b[2] for b in batch]
        src_ids, init = (None, None)
        if sources is not None:
            src_ids, init = sources.pick(labels.tolist(), seeds)
        # Decode the padded batch too: a compiled decoder then sees one shape only.
        images = sampler.images(labels, seeds, cfg, init=init, decode_batch=cfg.decode_batch)[:real]
        for j, (label, image_id, seed) in enumerate(batch[:real]):
            image = images[j] if out_size == size else fit_square(images[j], out_size)
            writer.add(
                image, image_id=image_id, class_name=classes[label], prompt=prompts[label], seed=seed,
                steps=steps_run, guidance=cfg.guidance, strength=strength, source_image_id=src_ids[j] if src_ids else "",
            )
        writer.end_batch()


class _SourcePicker:
    """Image-to-image sources: a training image of the same class, drawn with the image's own seed."""

    def __init__(self, info: dict, vae: AutoencoderKL, device: torch.device) -> None:
        data_dir = Path(info["data_dir"])
        if not (data_dir / "manifest.csv").is_file():
            raise UserError(f"img2img needs the training images, but {data_dir} (from generator.json) is gone")
        cache = load_cache(data_dir, int(info["size"]))
        self.cache, self.vae, self.device = cache, vae, device
        train = cache.indices("train")
        self.by_class = {c: train[cache.labels[train] == c] for c in range(len(cache.classes))}

    def pick(self, labels: list[int], seeds: list[int]) -> tuple[list[str], torch.Tensor]:
        rows = []
        for label, seed in zip(labels, seeds, strict=True):
            pool = self.by_class[label]
            if len(pool) == 0:
                raise UserError(f"no training image of class {self.cache.classes[label]} to start img2img from")
            rows.append(int(pool[np.random.default_rng(seed).integers(len(pool))]))
        latents = encode_images(self.vae, self.cache.images[rows], device=self.device, progress=False)
        return [self.cache.records[r].id for r in rows], latents
