"""Stable Diffusion family (SD-Turbo by default) through diffusers: fine-tune on the train split, then sample.

    run_train(TrainConfig(), data_dir="runs/x/data", out_dir="runs/x/generator")
    run_sample("runs/x/generator", SampleConfig(n_per_class=100), out_dir="runs/x/synthetic")

The settings live in sd_config.py; the work in sd_load.py (finding and loading the model, saving the result),
sd_latents.py (the VAE and text encoder, run once), sd_train.py (the fine-tuning loop) and sd_sample.py (the
denoising loop and the synthetic set). This module only wires them together, so nothing imports it back.
"""

from __future__ import annotations

import os
from pathlib import Path

from mrisynth.generate.output import claim_generator_dir, claim_synthetic_dir
from mrisynth.generate.sd_config import DEFAULT_MODEL, DEFAULT_PROMPT, SampleConfig, TrainConfig
from mrisynth.generate.sd_sample import sample_sd
from mrisynth.generate.sd_train import train_sd
from mrisynth.generate.validation import ValidationFn

__all__ = ["DEFAULT_MODEL", "DEFAULT_PROMPT", "SampleConfig", "TrainConfig", "run_sample", "run_train"]


def run_train(cfg: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
              validate: ValidationFn | None = None) -> Path:
    """Fine-tune on the train split of `data_dir`; writes a generator folder to `out_dir` (see sd_train).

    `validate(images, labels) -> {"val_...": float}` scores a small draw every `cfg.val_every` steps."""
    with claim_generator_dir(out_dir):
        return train_sd(cfg, data_dir=data_dir, out_dir=out_dir, validate=validate)


def run_sample(gen_dir: str | os.PathLike, cfg: SampleConfig, *, out_dir: str | os.PathLike) -> Path:
    """Write a synthetic set from a trained SD generator (see sd_sample)."""
    with claim_synthetic_dir(out_dir):
        return sample_sd(gen_dir, cfg, out_dir=out_dir)
