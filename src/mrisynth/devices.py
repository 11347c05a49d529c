"""Choosing the torch device: the one place that turns a config's `device` setting into a torch.device."""

from __future__ import annotations

import torch

from mrisynth.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> the GPU when there is one, else the CPU; asking for CUDA without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' was asked for but no CUDA GPU is visible; use --set device=cpu")
    return torch.device(name)
