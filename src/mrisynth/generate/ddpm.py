"""Class-conditional pixel diffusion trained from scratch: needs no downloaded weights and trains on a CPU.

The backend contract (see `mrisynth.generate`): TrainConfig, SampleConfig,
run_train(cfg, *, data_dir, out_dir), run_sample(gen_dir, cfg, *, out_dir). The pieces live in

    ddpm_config.py  settings                    ddpm_model.py   UNet, noise schedule, EMA, denoising loop
    ddpm_train.py   training + checkpoints      ddpm_sample.py  synthetic-set writing

    from mrisynth.config import load_config
    from mrisynth.generate import ddpm
    ddpm.run_train(load_config(ddpm.TrainConfig, preset="demo"), data_dir="run/data", out_dir="run/gen")
    ddpm.run_sample("run/gen", ddpm.SampleConfig(n_per_class=500), out_dir="run/synthetic")
"""

from mrisynth.generate.ddpm_config import SampleConfig, TrainConfig
from mrisynth.generate.ddpm_model import build_noise_scheduler, build_sampler, build_unet, denoise
from mrisynth.generate.ddpm_sample import generate, image_seed, load_unet, run_sample
from mrisynth.generate.ddpm_train import run_train

__all__ = [
    "SampleConfig", "TrainConfig", "build_noise_scheduler", "build_sampler",
    "build_unet", "denoise", "generate", "image_seed", "load_unet", "run_sample", "run_train",
]
