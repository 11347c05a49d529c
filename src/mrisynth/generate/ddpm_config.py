"""Settings of the from-scratch DDPM backend: dataclasses with the defaults; presets are YAML files of differences in
mrisynth/configs/ddpm-train/ (tiny, demo, full) and mrisynth/configs/ddpm-sample/ (fast, quality)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from mrisynth.config import check_at_least, check_within
from mrisynth.errors import UserError

Device = Literal["auto", "cpu", "cuda"]
Sampler = Literal["ddim", "dpm++"]


@dataclasses.dataclass
class TrainConfig:
    """Training a class-conditional pixel-space UNet on the train split of a prepared data folder."""

    PRESETS: ClassVar[str] = "ddpm-train"  # shipped presets: mrisynth/configs/ddpm-train/*.yaml

    image_size: int = 64  # square, 32..256 (a multiple of 2 ** (len(channels) - 1))
    fit: Literal["resize", "letterbox"] = "resize"
    # Intensity normalisation of the training images (data/normalize.py: none | percentile[:LO-HI] | zscore): the
    # generator then draws images in the space the classifier normalises to; a study requires the classifier's.
    normalize: str = "none"
    # UNet shape: one down/up block per entry; attention only at the lowest resolution (it is costly on a CPU).
    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    # Space-to-depth: the UNet sees (patch*patch, S/patch, S/patch); patch 2 makes a CPU model ~4x faster.
    patch: int = 1
    attention: bool = False
    # Noise: a cosine schedule and v-prediction keep few-step samplers (10-20 steps) well behaved.
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    # Optimisation
    steps: int = 2000
    batch_size: int = 32  # global batch per step, whatever the number of processes
    grad_accum_steps: int = 1  # micro-batches per step on each process
    lr: float = 2e-4
    warmup_steps: int = 50  # linear warm-up, then constant (so `steps` can be raised and training resumed)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # ramped up from 0 early on, so a short run still has a usable EMA
    p_uncond: float = 0.1  # label dropout: share of batches' labels replaced by "no class" for guidance
    # Loss options, off until measured: Min-SNR-gamma weighting (5 in the paper) and offset noise (~0.05; MRI
    # slices are mostly black background, which plain noise barely teaches a model to reach).
    snr_gamma: float = 0.0
    noise_offset: float = 0.0
    hflip: bool = True
    seed: int = 0
    device: Device = "auto"
    compile: bool = False  # torch.compile the UNet (CUDA only; pays off on long runs)
    # Bookkeeping
    log_every: int = 10
    checkpoint_every: int = 200
    grid_every: int = 500  # a PNG grid (one row per class) from the EMA model; 0 = only at the end
    grid_per_class: int = 8
    grid_steps: int = 20  # steps of the grid's sampler (the sampling recipe's scheduler and guidance)
    # The sampling recipe grids and validation draw with: a shipped ddpm-sample preset, "" = SampleConfig's defaults.
    sample_preset: str = ""
    # Validation while training (needs a validation function; the CLI and the study pass one): every val_every
    # steps draw val_per_class images per class with the recipe and log val_* metrics; keep_best ("", val_fd,
    # val_kid or val_tstr_acc) makes the best-scoring EMA weights the generator instead of the last ones.
    val_every: int = 0
    val_per_class: int = 16
    keep_best: str = ""

    def __post_init__(self) -> None:
        """Range checks at load (a config file or --set), before a generator folder is written."""
        from mrisynth.data.normalize import parse_normalization
        from mrisynth.generate.recipe import (  # torch: only when checked
            check_guidance,
            sample_recipe,
            uses_guidance,
        )

        check_at_least(self, 1, "steps", "batch_size", "grad_accum_steps", "layers_per_block", "patch", "log_every",
                       "checkpoint_every", "grid_per_class", "grid_steps", "val_per_class")
        check_at_least(self, 0, "warmup_steps", "grid_every", "val_every", "weight_decay", "grad_clip", "snr_gamma",
                       "noise_offset")
        check_at_least(self, 2, "num_train_timesteps")  # a schedule needs a noisy and a clean end
        check_within(self, "ema_decay", 0.0, 1.0, high_open=True)
        check_within(self, "p_uncond", 0.0, 1.0, high_open=True)
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise UserError(f"channels needs at least two entries of 1 or more, e.g. [32, 64]; got {list(self.channels)}")
        factor = self.patch * 2 ** (len(self.channels) - 1)
        if not 16 <= self.image_size <= 256 or self.image_size % factor:
            raise UserError(f"image_size {self.image_size} must be in 16..256 and divisible by {factor} "
                            "(patch times one halving per extra entry of channels)")
        parse_normalization(self.normalize)  # a UserError naming the valid settings
        recipe = sample_recipe(SampleConfig, self.sample_preset)  # the recipe grids and validation draw with
        check_guidance(recipe.guidance)
        if self.p_uncond == 0.0 and uses_guidance(recipe.guidance):
            raise UserError(f"guidance {recipe.guidance} needs an unconditional model: p_uncond is 0, so nothing "
                            "trains it; set p_uncond (e.g. 0.1) or sample with guidance 1")


@dataclasses.dataclass
class SampleConfig:
    """Drawing a labelled synthetic set from a trained DDPM generator."""

    PRESETS: ClassVar[str] = "ddpm-sample"  # shipped presets: mrisynth/configs/ddpm-sample/*.yaml

    n_per_class: int = 100
    # Per-class counts ({class: n}); when given they replace n_per_class and `classes` (a class left out gets
    # none), so a pool holds what proportional conditions need rather than the largest class's count for all.
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    classes: list[str] = dataclasses.field(default_factory=list)  # empty = every class
    sampler: Sampler = "dpm++"
    steps: int = 20
    # Classifier-free guidance scale: 1 = off (the conditional model alone, half the work), > 1 = on; below 1
    # is refused (at 0 the images would be unconditional yet labelled by class). The same rule as the SD backend.
    guidance: float = 2.0
    batch_size: int = 64
    seed: int = 0  # each image gets its own seed derived from (seed, class, index)
    device: Device = "auto"

    def __post_init__(self) -> None:
        """Range checks at load, before a synthetic-set folder is written."""
        from mrisynth.generate.recipe import check_guidance

        check_at_least(self, 1, "n_per_class", "steps", "batch_size")
        if any(not n >= 0 for n in self.counts.values()):
            raise UserError(f"counts must be 0 or more per class; got {self.counts}")
        check_guidance(self.guidance)
