"""Classifier settings: defaults in code are the reference Keras recipe; presets (YAML files of differences in
mrisynth/configs/classifier/: seed, fast, tiny) list only differences.

    cfg = load_config(ClassifierConfig, preset="fast", overrides=["epochs=3"])
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from mrisynth.config import check_at_least
from mrisynth.errors import UserError


@dataclasses.dataclass
class AugmentConfig:
    """Random affine + brightness applied to training images only (Keras ImageDataGenerator semantics)."""

    enabled: bool = True
    hflip: bool = True  # horizontal flip with probability 0.5
    rotation_deg: float = 15.0  # angle uniform in [-r, r]
    shift: float = 0.1  # width/height shift, fraction of the side, uniform in [-s, s] per axis
    shear_deg: float = 10.0  # shear angle uniform in [-s, s]
    zoom: float = 0.2  # Keras zoom_range=0.2: each axis scale uniform in [1 - z, 1 + z], independently
    brightness_min: float = 0.8  # intensity multiplied by a factor uniform in [min, max], then clipped
    brightness_max: float = 1.2


@dataclasses.dataclass
class ClassifierConfig:
    """Everything one classifier training run needs besides the data."""

    PRESETS: ClassVar[str] = "classifier"  # shipped presets: mrisynth/configs/classifier/*.yaml

    model: str = "resnet50"  # a key of mrisynth.classify.models.MODELS
    weights: str | None = None  # None (from scratch) | "imagenet" | path to .pth/.safetensors
    image_size: int = 224
    # Intensity normalisation of every image the classifier sees (data/normalize.py): none (x / 255, the reference
    # recipe) | percentile | percentile:LO-HI | zscore. Applied alike to real, synthetic and external images.
    normalize: str = "none"
    fit: Literal["resize", "letterbox"] = "resize"  # non-square images: squash to the square, or keep aspect and pad
    epochs: int = 100
    batch_size: int = 16  # global batch per optimizer step, whatever the number of processes
    grad_accum_steps: int = 1  # micro-batches per step on each process (batch_size / (processes x this) each)
    eval_batch_size: int = 128
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    # plateau: x plateau_factor when val loss stalls (per epoch); cosine: per-step warm-up then cosine to min_lr
    schedule: Literal["plateau", "cosine", "constant"] = "plateau"
    warmup_epochs: int = 0
    min_lr: float = 1e-7
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    plateau_min_delta: float = 1e-4  # Keras ReduceLROnPlateau default (absolute)
    early_stopping_patience: int | None = 5  # on val loss; None = train all epochs
    restore_best: bool = True  # evaluate the weights of the best val-loss epoch
    label_smoothing: float = 0.0
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    # GPU switches; each takes effect only when the run is on CUDA
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False  # torch.compile
    seed: int = 42
    deterministic: bool = True  # deterministic kernels (CPU results repeat exactly)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    samples_per_epoch: int | None = None  # None = training-set size; TrainData.samples_per_epoch wins when set

    def __post_init__(self) -> None:
        """Range checks at load (a config file or --set), before any run folder is written."""
        from mrisynth.data.normalize import parse_normalization

        check_at_least(self, 1, "epochs", "batch_size", "eval_batch_size", "grad_accum_steps")
        if not 8 <= self.image_size <= 2048:
            raise UserError(f"image_size must be 8 to 2048 pixels, got {self.image_size}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise UserError("samples_per_epoch must be at least 1 (or null for the training-set size)")
        parse_normalization(self.normalize)  # a UserError naming the valid settings
