"""Class-conditional pixel diffusion trained from scratch: needs no downloaded weights and trains on a CPU.

The backend contract (see `mrisynth.generate`): TrainConfig, SampleConfig, TRAIN_PRESETS, SAMPLE_PRESETS,
run_train(cfg, *, data_dir, out_dir), run_sample(gen_dir, cfg, *, out_dir). The pieces live in

    ddpm_config.py  settings and presets        ddpm_model.py   UNet, noise schedule, EMA, denoising loop
    ddpm_train.py   training + checkpoints      ddpm_sample.py  synthetic-set writing

    from mrisynth.config import from_dict
    from mrisynth.generate import ddpm
    ddpm.run_train(from_dict(ddpm.TrainConfig, ddpm.TRAIN_PRESETS["demo"]), data_dir="run/data", out_dir="run/gen")
    ddpm.run_sample("run/gen", ddpm.SampleConfig(n_per_class=500), out_dir="run/synthetic")
"""

from mrisynth.generate.ddpm_config import SAMPLE_PRESETS, TRAIN_PRESETS, SampleConfig, TrainConfig
from mrisynth.generate.ddpm_model import build_noise_scheduler, build_sampler, build_unet, denoise
from mrisynth.generate.ddpm_sample import generate, image_seed, load_unet, run_sample
from mrisynth.generate.ddpm_train import run_train

__all__ = [
    "SAMPLE_PRESETS", "TRAIN_PRESETS", "SampleConfig", "TrainConfig", "build_noise_scheduler", "build_sampler",
    "build_unet", "denoise", "generate", "image_seed", "load_unet", "run_sample", "run_train",
]
