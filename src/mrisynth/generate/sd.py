"""Stable Diffusion family (SD-Turbo by default) through diffusers: fine-tune on the train split, then sample.

    run_train(TrainConfig(), data_dir="runs/x/data", out_dir="runs/x/generator")
    run_sample("runs/x/generator", SampleConfig(n_per_class=100), out_dir="runs/x/synthetic")

The work lives in sd_load.py (finding and loading the model, saving the result), sd_latents.py (the VAE and text
encoder, run once), sd_train.py (the fine-tuning loop) and sd_sample.py (the denoising loop and the synthetic set).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from mrisynth.generate.validation import ValidationFn

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_PROMPT = "a T1-weighted contrast-enhanced brain MRI slice showing {cls}"


@dataclasses.dataclass
class TrainConfig:
    """Fine-tuning settings. Defaults follow the reference run: full UNet, AdamW 1e-5, batch 8, 256 px."""

    PRESETS: ClassVar[str] = "sd-train"  # shipped presets: mrisynth/configs/sd-train/*.yaml

    model: str = DEFAULT_MODEL  # a Hugging Face id (read from the local cache only) or a local pipeline folder
    mode: Literal["full", "lora"] = "full"
    size: int = 256  # training resolution in pixels (images come from the packed cache at this size)
    steps: int = 2000  # optimizer steps
    batch_size: int = 8  # global batch per step, whatever the number of processes
    grad_accum_steps: int = 1  # micro-batches per step on each process
    lr: float = 1e-5
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    grad_clip: float = 1.0
    lora_rank: int = 16
    lora_alpha: int = 16
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    prompt_template: str = DEFAULT_PROMPT  # `{cls}` becomes the class name (underscores as spaces)
    caption_dropout: float = 0.1  # share of steps' images trained with the empty prompt (for guidance)
    flip: bool = True  # horizontal flips, cached as a second set of latents
    gradient_checkpointing: bool = False
    ema: bool = False  # keep an exponential moving average of the trained weights and save that
    ema_decay: float = 0.999  # ramped up from 0 early on (as in the DDPM backend), so short runs are not untuned
    # Loss options, off until measured on MRI: Min-SNR-gamma weighting (5 is the paper's value) and offset noise
    # (about 0.05 lets the model darken a whole image: MRI slices are mostly black background).
    snr_gamma: float = 0.0
    noise_offset: float = 0.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on a GPU, fp32 on the CPU
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    sample_every: int = 500  # a grid PNG (one image per class) every N steps; 0 = never
    # Grids and validation draw with this sampling recipe (a SAMPLE_PRESETS name; "" = SampleConfig's defaults),
    # so what training shows is what `generator sample` will make.
    sample_preset: str = ""
    # Validation while training (needs a validation function, which the CLI and the study pass): every
    # `val_every` steps draw `val_per_class` images per class, log val_* metrics; keep_best: "", val_fd, val_kid
    # or val_tstr_acc saves the best-scoring weights as the generator instead of the last ones.
    val_every: int = 0
    val_per_class: int = 16
    keep_best: str = ""
    device: str = "auto"


@dataclasses.dataclass
class SampleConfig:
    """Sampling settings. Defaults are the `finetuned` preset: what a fine-tuned generator supports (see below)."""

    PRESETS: ClassVar[str] = "sd-sample"  # shipped presets: mrisynth/configs/sd-sample/*.yaml

    n_per_class: int = 100
    # Per-class counts ({class: n}); when given they replace n_per_class (a class left out gets no images), so a
    # pool can hold what the study's proportional conditions need instead of the largest class's count for all.
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    mode: Literal["text2img", "img2img"] = "text2img"
    steps: int = 30
    # Classifier-free guidance scale: 1 = off (one UNet pass per step, the conditional model alone), > 1 = on;
    # below 1 is refused (SD-Turbo's guidance_scale=0 is 1 here). The same rule as the DDPM backend.
    guidance: float = 2.0
    strength: float = 0.75  # img2img only: how much of the source image's noise schedule is replayed
    scheduler: Literal["euler_ancestral", "euler", "ddim"] = "euler"
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    size: int | None = None  # PNG size in pixels; None = the training size
    batch_size: int = 16
    seed: int = 0  # each image's seed is derived from this, its class and its index (recorded per image)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on a GPU, fp32 on the CPU
    channels_last: bool = True  # GPU only
    compile: bool = True  # GPU only: torch.compile the UNet and the VAE decoder
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs (batches are padded)
    decode_batch: int = 0  # VAE decode batch size; 0 = the whole batch at once
    device: str = "auto"


TRAIN_PRESETS: dict[str, dict] = {
    "full": {},
    "lora": {"mode": "lora", "lr": 1e-4, "batch_size": 8},
    # A CPU smoke run: a couple of steps at 32 px (use with a small model folder, e.g. the tests' tiny pipeline).
    "tiny": {"mode": "lora", "lr": 1e-3, "size": 32, "steps": 2, "batch_size": 2, "checkpoint_every": 1,
             "sample_every": 0, "log_every": 1},
}

# Sampling recipes. After fine-tuning, SD-Turbo is no longer the adversarially distilled 1-step model of its
# model card: a plain denoising (MSE) fine-tune teaches it the posterior mean, so its 1-step output is a blur of
# many training images (an MSE-optimal denoiser on phantom slices averaged ~107 of them at 0.31x the real
# sharpness). Multi-step sampling is what such a denoiser supports; caption dropout trained the unconditional
# branch, so guidance works too. `turbo` stays for an un-tuned model or an LCM/ADD re-distilled one, and every
# 1-4 step run after a fine-tune logs a warning.
SAMPLE_PRESETS: dict[str, dict] = {
    # The default: 30 Euler steps on trailing timesteps with moderate guidance 2 (deterministic given the noise).
    "finetuned": {"mode": "text2img", "steps": 30, "guidance": 2.0, "scheduler": "euler", "timestep_spacing": "trailing"},
    "turbo": {"mode": "text2img", "steps": 1, "guidance": 1.0, "scheduler": "euler_ancestral",
              "timestep_spacing": "trailing"},
    # The reference protocol: img2img from a random training image of the same class.
    "seed": {"mode": "img2img", "steps": 50, "guidance": 7.5, "strength": 0.75, "scheduler": "euler",
             "timestep_spacing": "trailing"},
}


def sample_recipe(preset: str) -> SampleConfig:
    """The SampleConfig of a SAMPLE_PRESETS name ("" = the defaults): the recipe training previews draw with."""
    from mrisynth.config import from_dict, preset_dict

    return from_dict(SampleConfig, preset_dict(SAMPLE_PRESETS, preset or None, "sd sampling"))


def run_train(cfg: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
              validate: ValidationFn | None = None) -> Path:
    """Fine-tune on the train split of `data_dir`; writes a generator folder to `out_dir` (see sd_train).

    `validate(images, labels) -> {"val_...": float}` scores a small draw every `cfg.val_every` steps."""
    from mrisynth.generate.output import claim_generator_dir
    from mrisynth.generate.sd_train import train_sd

    with claim_generator_dir(out_dir):
        return train_sd(cfg, data_dir=data_dir, out_dir=out_dir, validate=validate)


def run_sample(gen_dir: str | os.PathLike, cfg: SampleConfig, *, out_dir: str | os.PathLike) -> Path:
    """Write a synthetic set from a trained SD generator (see sd_sample)."""
    from mrisynth.generate.output import claim_synthetic_dir
    from mrisynth.generate.sd_sample import sample_sd

    with claim_synthetic_dir(out_dir):
        return sample_sd(gen_dir, cfg, out_dir=out_dir)
