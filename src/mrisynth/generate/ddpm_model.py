"""The DDPM backend's model pieces: the class-conditional UNet, its noise schedule, EMA, and the denoising loop.

Kept apart from training and sampling so both use the same few lines: the training loop's preview grids and
`run_sample` call the same `denoise`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from mrisynth.errors import UserError
from mrisynth.generate.ddpm_config import TrainConfig
from mrisynth.generate.recipe import check_guidance, ema_decay_at, uses_guidance

__all__ = ["autocast", "build_noise_scheduler", "build_sampler", "build_unet", "denoise", "ema_decay_at",
           "from_model_space", "patch_size", "save_grid", "seeded_noise", "to_model_space", "to_uint8_images",
           "update_ema"]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (about twice as fast, same quality for diffusion); plain fp32 on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def build_unet(cfg: TrainConfig, n_classes: int) -> UNet2DModel:
    """A one-channel UNet; class index `n_classes` is the extra "no class" label used for guidance."""
    levels = len(cfg.channels)  # shape settings were checked when cfg was made (ddpm_config)
    down = ["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D" if cfg.attention else "DownBlock2D"]
    up = ["AttnUpBlock2D" if cfg.attention else "UpBlock2D"] + ["UpBlock2D"] * (levels - 1)
    return UNet2DModel(
        sample_size=cfg.image_size // cfg.patch,
        in_channels=cfg.patch**2,
        out_channels=cfg.patch**2,
        block_out_channels=tuple(cfg.channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=min(32, math.gcd(*cfg.channels)),  # tiny test models have 8 channels
        add_attention=cfg.attention,
        num_class_embeds=n_classes + 1,
    )


def patch_size(unet: UNet2DModel) -> int:
    """The space-to-depth factor a UNet was built for (its channel count is patch ** 2)."""
    return math.isqrt(unet.config.in_channels)


def to_model_space(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 1, S, S) -> (B, p*p, S/p, S/p): each p x p block of pixels becomes p*p channels."""
    return F.pixel_unshuffle(x, patch) if patch > 1 else x


def from_model_space(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of `to_model_space`."""
    return F.pixel_shuffle(x, patch) if patch > 1 else x


def build_noise_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    """The forward (noising) process the model is trained against; its config is saved with the model."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,
        # "trailing" makes few-step samplers start from pure noise (t = T-1), which matters at 10 steps.
        timestep_spacing="trailing",
    )


def build_sampler(name: str, scheduler_config: dict) -> SchedulerMixin:
    """A fast deterministic sampler (DDIM or DPM-Solver++) sharing the training noise schedule.

    An epsilon model's clean-image estimate is (x - sigma * eps) / alpha; at t = 999 of the cosine schedule alpha
    is 5e-5, so a 0.01 error in eps moved DPM-Solver++'s first step by 31 (measured). Clipping that estimate to
    the data range [-1, 1], as DDIM's clip_sample does, bounds it (0.23). v-prediction does not divide: unchanged.
    """
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config)
    if name == "dpm++":
        clip = {"thresholding": True, "sample_max_value": 1.0} if scheduler_config.get("prediction_type") == "epsilon" else {}
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++", **clip)
    raise UserError(f"unknown sampler '{name}'; use ddim or dpm++")


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, *, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def seeded_noise(seeds: Sequence[int], size: int) -> torch.Tensor:
    """(B, 1, S, S) standard normal, image i drawn from its own CPU generator seeded with seeds[i].

    One generator per image makes every image reproducible on its own, whatever batch it was drawn in,
    and the same on CPU and GPU (the noise is always drawn on the CPU).
    """
    noise = [torch.randn((1, size, size), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise)


@torch.no_grad()
def denoise(
    unet: UNet2DModel,
    sampler: SchedulerMixin,
    labels: torch.Tensor,  # (B,) int64 class indices
    noise: torch.Tensor,  # (B, 1, S, S) standard normal
    *,
    steps: int,
    guidance: float,
) -> torch.Tensor:
    """Run the reverse process; returns (B, 1, S, S) float in [-1, 1]. guidance: 1 = off, > 1 = guided."""
    check_guidance(guidance)
    device = next(unet.parameters()).device
    patch = patch_size(unet)
    null = torch.full_like(labels, unet.config.num_class_embeds - 1).to(device)
    labels = labels.to(device)
    sampler.set_timesteps(steps, device=device)  # also resets multistep solvers' history
    x = to_model_space(noise.to(device), patch) * sampler.init_noise_sigma
    for t in sampler.timesteps:
        x_in = sampler.scale_model_input(x, t)
        with autocast(device):
            if not uses_guidance(guidance):
                out = unet(x_in, t, class_labels=labels).sample
            else:  # classifier-free guidance: one batch holds the conditional and the unconditional halves
                both = unet(torch.cat([x_in, x_in]), t, class_labels=torch.cat([labels, null])).sample
                cond, uncond = both.float().chunk(2)
                out = uncond + guidance * (cond - uncond)
        x = sampler.step(out.float(), t, x).prev_sample
    return from_model_space(x, patch).clamp(-1.0, 1.0)


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """(B, 1, S, S) in [-1, 1] -> (B, S, S) uint8."""
    return ((x[:, 0].float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def save_grid(images: np.ndarray, path, *, rows: int) -> None:
    """Tile (N, S, S) uint8 images into `rows` rows (one per class) and save a one-channel PNG."""
    from mrisynth.data.images import save_grayscale_png

    n, s, _ = images.shape
    cols = math.ceil(n / rows)
    grid = np.zeros((rows * s, cols * s), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = img
    save_grayscale_png(grid, path)
