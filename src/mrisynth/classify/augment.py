"""Batched augmentation on the device: one affine_grid + grid_sample per batch, per-sample random matrices.

It ports Keras `ImageDataGenerator(rotation_range, width/height_shift_range, shear_range, zoom_range,
horizontal_flip, brightness_range, fill_mode="nearest")`: each output pixel samples the input at
`A @ p + t` (centred, normalised coordinates), with A = rotation @ shear @ zoom, bilinear interpolation and
border replication for points outside the image (Keras "nearest" fill). Brightness multiplies and clips, like
PIL's ImageEnhance.Brightness that Keras uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrisynth.classify.config import AugmentConfig


def to_unit_float(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) uint8 -> (B, 1, H, W) float32 in [0, 1] (the reference's rescale 1/255)."""
    return images_u8.float().div_(255.0)


def random_affine_params(
    n: int, cfg: AugmentConfig, *, generator: torch.Generator, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Draw the per-sample parameters (each shape (n,)); drawn on `generator`'s device, moved to `device`."""
    gen_device = generator.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n, device=gen_device).uniform_(lo, hi, generator=generator)

    params = {
        "angle": uniform(-cfg.rotation_deg, cfg.rotation_deg),
        "shift_x": uniform(-cfg.shift, cfg.shift),
        "shift_y": uniform(-cfg.shift, cfg.shift),
        "shear": uniform(-cfg.shear_deg, cfg.shear_deg),
        "zoom_x": uniform(1.0 - cfg.zoom, 1.0 + cfg.zoom),
        "zoom_y": uniform(1.0 - cfg.zoom, 1.0 + cfg.zoom),
        "flip": (uniform(0.0, 1.0) < 0.5) if cfg.hflip else torch.zeros(n, dtype=torch.bool, device=gen_device),
        "brightness": uniform(cfg.brightness_min, cfg.brightness_max),
    }
    return {k: v.to(device) for k, v in params.items()}


def affine_matrices(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 2, 3) matrices for `F.affine_grid`: output coords -> input coords, in [-1, 1] units."""
    angle = torch.deg2rad(params["angle"])
    shear = torch.deg2rad(params["shear"])
    n = angle.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([cos, -sin, sin, cos], dim=1).view(n, 2, 2)
    shear_m = torch.stack([torch.ones_like(shear), -torch.sin(shear), torch.zeros_like(shear), torch.cos(shear)],
                          dim=1).view(n, 2, 2)
    zoom = torch.diag_embed(torch.stack([params["zoom_x"], params["zoom_y"]], dim=1))
    # A horizontal flip negates x of the sampling point; composing it here keeps it in the single grid_sample.
    flip = torch.diag_embed(torch.stack([1.0 - 2.0 * params["flip"].float(), torch.ones_like(angle)], dim=1))
    linear = rotation @ shear_m @ zoom @ flip  # (n, 2, 2)
    # A shift of a fraction s of the side is 2s in normalised units ([-1, 1] spans the side).
    translation = 2.0 * torch.stack([params["shift_x"], params["shift_y"]], dim=1).unsqueeze(2)  # (n, 2, 1)
    return torch.cat([linear, translation], dim=2)


def augment_batch(images_u8: torch.Tensor, cfg: AugmentConfig, *, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) uint8 on any device -> augmented (B, 1, H, W) float32 in [0, 1] on the same device."""
    if not cfg.enabled:
        return to_unit_float(images_u8)
    params = random_affine_params(images_u8.shape[0], cfg, generator=generator, device=images_u8.device)
    return apply_augmentation(images_u8, params)


def apply_augmentation(images_u8: torch.Tensor, params: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Apply drawn parameters (None = no augmentation): (B, 1, H, W) uint8 -> float32 in [0, 1].

    Kept apart from the draw so that data-parallel processes can draw a global batch's parameters and each
    apply its own slice of them.
    """
    x = to_unit_float(images_u8)
    if params is None:
        return x
    theta = affine_matrices(params)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x * params["brightness"].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
