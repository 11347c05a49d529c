"""Classifier models through a small registry: torchvision ResNets and a tiny ResNet for tests.

Every model takes `(B, 1, H, W)` float in [0, 1] (the reference recipe's rescale 1/255 happens before) and ends in
`model.fc`, an `nn.Linear`: setting `model.fc = nn.Identity()` yields penultimate features (the quality audit uses
this). The ImageNet-shaped ResNets replicate the one MRI channel to three on the way in, so pretrained stems work
unchanged; the tiny model has a one-channel stem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from mrisynth.errors import UserError

log = logging.getLogger(__name__)

# ImageNet statistics, applied inside the model only when ImageNet weights are loaded
# (the reference recipe trains from scratch on x/255 and uses no normalisation).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class GrayResNet(tvm.ResNet):
    """A torchvision ResNet fed one-channel images: the channel is replicated to three, then normalised.

    `input_mean` / `input_std` are buffers (saved with the weights) so a model trained from ImageNet weights
    reloads with the same normalisation; from scratch they are 0 and 1.
    """

    def __init__(self, block: type, layers: list[int], num_classes: int) -> None:
        super().__init__(block, layers, num_classes=num_classes)
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1))

    def use_imagenet_normalisation(self) -> None:
        self.input_mean.copy_(torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.input_std.copy_(torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) in [0, 1] -> (B, num_classes) logits
        x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W): a view, no copy
        return super().forward((x - self.input_mean) / self.input_std)


class TinyResNet(nn.Module):
    """A three-stage ResNet with widths 8/16/32 (about 25k parameters) for tests and CPU demos."""

    def __init__(self, num_classes: int, *, widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or in_ch != width:
                down = nn.Sequential(nn.Conv2d(in_ch, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
            blocks.append(BasicBlock(in_ch, width, stride=stride, downsample=down))
            in_ch = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) in [0, 1] -> (B, num_classes)
        x = self.pool(self.layers(self.stem(x))).flatten(1)
        return self.fc(x)


def _resnet50(num_classes: int) -> nn.Module:
    return GrayResNet(tvm.resnet.Bottleneck, [3, 4, 6, 3], num_classes)


def _resnet18(num_classes: int) -> nn.Module:
    return GrayResNet(BasicBlock, [2, 2, 2, 2], num_classes)


# name -> (constructor, torchvision ImageNet weights enum entry or None)
MODELS: dict[str, tuple[Callable[[int], nn.Module], tvm.WeightsEnum | None]] = {
    "resnet50": (_resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet18": (_resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "tiny": (TinyResNet, None),
}


def build_classifier(name: str, num_classes: int, *, weights: str | None = None) -> nn.Module:
    """Build classifier `name` with `num_classes` outputs.

    weights: None (random init), "imagenet" (the torchvision checkpoint from the local torch hub cache; never
    downloaded), or a local `.pth` / `.safetensors` file (a classifier head of another size is skipped).
    """
    if name not in MODELS:
        raise UserError(f"unknown classifier model '{name}'; use one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    constructor, imagenet = MODELS[name]
    model = constructor(num_classes)
    if weights is None:
        return model
    if weights == "imagenet":
        if imagenet is None:
            raise UserError(f"model '{name}' has no ImageNet weights; use weights: null or a local file")
        state = _read_state_dict(imagenet_weights_path(imagenet))
        model.use_imagenet_normalisation()
    else:
        state = _read_state_dict(Path(weights))
    _load_backbone(model, state, source=str(weights))
    return model


def imagenet_weights_path(entry: tvm.WeightsEnum) -> Path:
    """The file torchvision would cache `entry` as; a UserError saying where to put it when absent."""
    filename = os.path.basename(urlparse(entry.url).path)
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise UserError(
            f"ImageNet weights not found: expected {path} (download {entry.url} on a machine with internet and "
            f"copy it there, or set TORCH_HOME); mrisynth never downloads weights by itself"
        )
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; give a .pth or .safetensors file, or 'imagenet'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or pickled with code: both are the user's file to fix
        raise UserError(f"cannot read weights from {path} ({exc.__class__.__name__}); give a state-dict file") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # our own last.pt / common trainer checkpoints
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict")
    return state


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load matching tensors; the head (`fc.*`) is skipped when its shape differs (another class count)."""
    own = model.state_dict()
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    skipped = [k for k in state if k.startswith("fc.") and k in own and own[k].shape != state[k].shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "input_"))]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise UserError(f"weights {source} do not fit this model (first mismatch: '{bad}'); check the model name")
    if skipped:
        log.info("weights %s: head skipped (other class count), it starts from random init", source)
