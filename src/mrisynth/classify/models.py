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

# ImageNet statistics, for RGB networks pretrained on ImageNet. The classifiers apply them inside the model only
# when ImageNet weights are loaded (the reference recipe trains from scratch on x/255 with no normalisation);
# the quality audit applies them to its pretrained feature networks.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        self.input_mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.input_std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

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
        state = read_state_dict(imagenet_weights_path(imagenet))
        model.use_imagenet_normalisation()
    else:
        state = read_state_dict(Path(weights))
    load_backbone(model, state, source=str(weights))
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


# Prefixes wrappers put before every key: torch.compile, DataParallel/DDP, and common training frameworks.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.", "backbone.", "model.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` or torch file, loaded without running code (weights_only).

    A checkpoint holding the weights under "model" (our last.pt, many trainers) or "state_dict" is unwrapped,
    and a wrapper prefix that every key shares ("module.", "_orig_mod.", ...) is stripped.
    Missing, unreadable or foreign files are a UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; give a .pth or .safetensors state-dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or pickled with code: both are the user's file to fix
        raise UserError(f"cannot read weights from {path} ({exc.__class__.__name__}); give a state-dict file") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_backbone(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    network: str = "this model",
    ignore: tuple[str, ...] = (),
) -> None:
    """Load `state` into `model`, all but its head; anything else that does not fit is a UserError.

    Keys starting with one of `ignore` are dropped (e.g. heads a feature extractor never uses). The head
    (`fc.*`) is skipped when its shape differs (another class count) and may be missing; so may the
    `input_*` normalisation buffers. `source` and `network` name the file and the model in messages.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)} if ignore else dict(state)
    skipped = [k for k in state if k.startswith("fc.") and k in own and own[k].shape != state[k].shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches are raised, not returned
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc)[:200])
        raise UserError(f"weights {source} do not fit {network} ({detail}); give the matching state dict") from exc
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "input_", *ignore))]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise UserError(f"weights {source} do not fit {network} ({len(missing)} missing, "
                        f"{len(result.unexpected_keys)} unexpected keys, e.g. '{bad}'); give the matching "
                        "state dict (or check the model name)")
    if skipped:
        log.info("weights %s: head skipped (other class count), it starts from random init", source)
