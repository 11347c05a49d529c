"""Settings of the SD-family backend: dataclasses with the defaults; presets are YAML files of differences in
mrisynth/configs/sd-train/ and mrisynth/configs/sd-sample/ (light: imports nothing heavy, so the study config can
type its generator sections without loading diffusers)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from mrisynth.config import check_at_least, check_within
from mrisynth.errors import UserError

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_PROMPT = "a T1-weighted contrast-enhanced brain MRI slice showing {cls}"


@dataclasses.dataclass
class TrainConfig:
    """Fine-tuning settings. Defaults follow the reference run: full UNet, AdamW 1e-5, batch 8, 256 px."""

    PRESETS: ClassVar[str] = "sd-train"  # shipped presets: mrisynth/configs/sd-train/*.yaml

    model: str = DEFAULT_MODEL  # a Hugging Face id (read from the local cache only) or a local pipeline folder
    mode: Literal["full", "lora"] = "full"
    size: int = 256  # training resolution in pixels (images come from the packed cache at this size)
    # Intensity normalisation of the training images before encoding (data/normalize.py), as for the DDPM backend.
    normalize: str = "none"
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
    # Grids and validation draw with this sampling recipe (a shipped sd-sample preset; "" = SampleConfig's defaults),
    # so what training shows is what `generator sample` will make.
    sample_preset: str = ""
    # Validation while training (needs a validation function, which the CLI and the study pass): every
    # `val_every` steps draw `val_per_class` images per class, log val_* metrics; keep_best: "", val_fd, val_kid
    # or val_tstr_acc saves the best-scoring weights as the generator instead of the last ones.
    val_every: int = 0
    val_per_class: int = 16
    keep_best: str = ""
    device: str = "auto"

    def __post_init__(self) -> None:
        """Range checks at load (a config file or --set), before a generator folder is written."""
        from mrisynth.data.normalize import parse_normalization
        from mrisynth.generate.recipe import sample_recipe

        parse_normalization(self.normalize)
        check_at_least(self, 1, "steps", "batch_size", "grad_accum_steps", "lora_rank", "log_every",
                       "checkpoint_every", "val_per_class")
        check_at_least(self, 0, "warmup_steps", "sample_every", "val_every", "weight_decay", "grad_clip",
                       "snr_gamma", "noise_offset")
        check_within(self, "ema_decay", 0.0, 1.0, high_open=True)
        check_within(self, "caption_dropout", 0.0, 1.0, high_open=True)
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not 16 <= self.size <= 2048 or self.size % 8:
            raise UserError(f"size must be 16..2048 pixels and a multiple of 8 (the VAE downsamples by 8); got {self.size}")
        if "{cls}" not in self.prompt_template:
            raise UserError(f"prompt_template must contain {{cls}}; got '{self.prompt_template}'")
        sample_recipe(SampleConfig, self.sample_preset)  # the recipe grids and validation draw with: checked too


def executed_steps(steps: int, strength: float | None) -> int:
    """Denoising steps that really run: all of them for text2img, int(steps * strength) for img2img."""
    return steps if strength is None else int(steps * strength)


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

    def __post_init__(self) -> None:
        """Range checks at load, so a set is never started with settings that cannot give what its provenance
        would claim."""
        from mrisynth.generate.recipe import check_guidance

        check_at_least(self, 1, "n_per_class", "steps", "batch_size")
        check_at_least(self, 0, "decode_batch")
        if any(not n >= 0 for n in self.counts.values()):
            raise UserError(f"counts must be 0 or more per class; got {self.counts}")
        if self.size is not None and (not 16 <= self.size <= 2048 or self.size % 8):
            raise UserError(f"size must be 16..2048 pixels and a multiple of 8 (or null); got {self.size}")
        check_guidance(self.guidance)
        if self.mode == "img2img":
            if not 0.0 < self.strength <= 1.0:
                raise UserError(f"strength must be in (0, 1] for img2img; got {self.strength}")
            if executed_steps(self.steps, self.strength) < 1:
                need = math.ceil(1.0 / self.strength)
                raise UserError(f"img2img with steps={self.steps} and strength={self.strength} runs no denoising "
                                f"step (steps x strength < 1, it would start from pure noise); use steps of {need} "
                                "or more")
