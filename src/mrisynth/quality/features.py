"""Feature spaces the audit compares images in; each turns (N, S, S) uint8 images into (N, D) float64 features.

    stats        weight-free floor: intensity, gradient, neighbour-difference texture and power-spectrum statistics
    classifier   the study's own real-only classifier, penultimate layer (`mrisynth.classify.load_classifier`)
    inception    torchvision Inception-v3 from a local state dict (.pth, loaded with weights_only=True)
    dinov2       a transformers DINOv2 folder (from_pretrained with local_files_only=True), CLS embedding
    radimagenet  a torchvision ResNet50 state dict of RadImageNet weights (.pth or .safetensors)

Nothing here downloads: a space whose weights are not given is a `UserError` that says which file to provide.
Grey images are replicated to three channels for RGB-pretrained networks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisynth.classify.checkpoint import load_classifier
from mrisynth.classify.models import IMAGENET_MEAN, IMAGENET_STD, load_backbone, read_state_dict
from mrisynth.devices import resolve_device
from mrisynth.errors import UserError

log = logging.getLogger(__name__)

SPACES = ("stats", "classifier", "inception", "dinov2", "radimagenet")
_STATS_SIZE = 64  # stats are computed at one fixed size so they do not depend on the audit's image size


@dataclasses.dataclass
class FeatureSpace:
    """A named image -> feature function. `standardize`: z-score with reference statistics before comparing
    (for spaces whose dimensions have unrelated units, like `stats`)."""

    name: str
    embed: Callable[[np.ndarray], np.ndarray]  # (N, S, S) uint8 -> (N, D) float64
    standardize: bool = False
    source: str = ""  # identifies the weights (path, sizes, mtimes): cached features are reused only if equal


def weights_stamp(path: str | os.PathLike) -> str:
    """A cheap identity of a weights file or folder: resolved path, and each file's size and mtime."""
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return f"{path}|" + ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


# ----------------------------------------------------------------------------------------------- stats space

def stats_features(images: np.ndarray) -> np.ndarray:
    """Weight-free descriptors of (N, S, S) uint8 images -> (N, 29) float64.

    Intensity moments and quantiles, the share of bright (non-background) pixels, gradient-magnitude statistics,
    mean absolute neighbour differences at 1/2/4 px (a cheap GLCM-like texture measure) and the radially
    averaged log power spectrum in 8 frequency bands.
    """
    x = _to_float(images, _STATS_SIZE)[:, 0].double()  # (N, 64, 64) in [0, 1]
    flat = x.flatten(1)
    mean, std = flat.mean(1), flat.std(1)
    z = (flat - mean[:, None]) / std.clamp_min(1e-6)[:, None]
    quantiles = torch.quantile(flat, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=flat.dtype), dim=1).T
    foreground = (flat > 0.1).double().mean(1)
    gx, gy = x[:, :, 1:] - x[:, :, :-1], x[:, 1:, :] - x[:, :-1, :]
    grad = torch.sqrt(gx[:, :-1, :] ** 2 + gy[:, :, :-1] ** 2).flatten(1)
    grad_q = torch.quantile(grad, torch.tensor([0.5, 0.9, 0.99], dtype=grad.dtype), dim=1).T
    texture = [
        (x[:, :, d:] - x[:, :, :-d]).abs().flatten(1).mean(1) for d in (1, 2, 4)
    ] + [(x[:, d:, :] - x[:, :-d, :]).abs().flatten(1).mean(1) for d in (1, 2, 4)]
    columns = [
        mean, std, (z**3).mean(1), (z**4).mean(1), foreground, quantiles,
        grad.mean(1), grad.std(1), grad_q, torch.stack(texture, 1), _radial_power(x),
    ]
    feats = torch.cat([c if c.ndim == 2 else c[:, None] for c in columns], 1)
    return feats.numpy()


def _radial_power(x: torch.Tensor, bands: int = 8) -> torch.Tensor:
    """Log mean power in `bands` rings of radial frequency: (N, S, S) -> (N, bands)."""
    n, s, _ = x.shape
    power = torch.fft.fftshift(torch.fft.fft2(x - x.mean((1, 2), keepdim=True)), dim=(-2, -1)).abs() ** 2
    yy, xx = torch.meshgrid(torch.arange(s) - s // 2, torch.arange(s) - s // 2, indexing="ij")
    radius = torch.sqrt(xx.double() ** 2 + yy.double() ** 2) / (s // 2)  # 0 at DC, 1 at Nyquist
    ring = (radius.clamp(max=0.999) * bands).long().flatten()  # corners folded into the last band
    totals = torch.zeros(n, bands, dtype=power.dtype).index_add_(1, ring, power.flatten(1))
    counts = torch.bincount(ring, minlength=bands).to(power.dtype)
    return torch.log10(totals / counts + 1e-8)


# ------------------------------------------------------------------------------------------ network spaces

def _to_float(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, 1, size, size) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)[:, None]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x


@torch.inference_mode()
def embed_with_module(
    model: nn.Module,
    images: np.ndarray,
    *,
    input_size: int,
    rgb: bool,
    batch_size: int = 64,
    output: Callable[[object], torch.Tensor] | None = None,
) -> np.ndarray:
    """Run `model` over (N, S, S) uint8 images in batches -> (N, D) float64.

    `rgb`: replicate the grey channel and apply ImageNet normalisation (pretrained RGB networks);
    otherwise the model gets (B, 1, H, W) in [0, 1] as the study's classifiers do.
    `output` picks the embedding out of whatever the model returns (default: the tensor itself).
    """
    device = resolve_device("auto")
    model = model.eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    chunks = []
    for start in range(0, len(images), batch_size):
        x = _to_float(images[start:start + batch_size], input_size).to(device)  # (B, 1, H, W) in [0, 1]
        if rgb:
            x = (x.expand(-1, 3, -1, -1) - mean) / std  # (B, 3, H, W), ImageNet-normalised
        # bf16 autocast on GPU halves memory traffic; features are cast back to float64 for the statistics.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x)
        feats = output(out) if output else out
        chunks.append(feats.float().flatten(1).cpu().double())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0))


def classifier_space(model: nn.Module, *, input_size: int, name: str = "classifier") -> FeatureSpace:
    """Penultimate-layer features of a classifier whose last layer is `model.fc` (replaced by Identity)."""
    if not isinstance(getattr(model, "fc", None), nn.Module):
        raise UserError("the classifier has no `fc` layer to remove; it must end in `model.fc` (nn.Linear)")
    model.fc = nn.Identity()
    return FeatureSpace(name, lambda images: embed_with_module(model, images, input_size=input_size, rgb=False))


def load_classifier_space(run_dir: str | os.PathLike) -> FeatureSpace:
    """The `classifier` space from a trained real-only classifier run folder."""
    model, info = load_classifier(run_dir)
    size = int(info.get("image_size") or 0)
    if size <= 0:
        raise UserError(f"cannot tell the input size of the classifier in {run_dir}; its info has no image_size")
    return dataclasses.replace(classifier_space(model, input_size=size), source=weights_stamp(run_dir))


def _require_file(path: str, space: str, what: str) -> Path:
    if not path:
        raise UserError(f"feature space '{space}' needs local weights: set {what} (e.g. --set {what}=PATH); "
                        "mrisynth never downloads them")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"feature space '{space}': {p} does not exist; put the weights there or fix {what}")
    return p


def _load_feature_backbone(model: nn.Module, path: Path, space: str) -> nn.Module:
    """`model` with the weights in `path` (its classification heads ignored) and `fc` removed: pool features."""
    load_backbone(model, read_state_dict(path), source=str(path), network=f"the {space} network",
                  ignore=("fc.", "AuxLogits."))
    model.fc = nn.Identity()
    return model


def load_inception_space(weights: str) -> FeatureSpace:
    """Inception-v3 pool features (2048-d, 299 px) from a local torchvision state dict."""
    path = _require_file(weights, "inception", "inception_weights")
    from torchvision.models import inception_v3

    model = _load_feature_backbone(inception_v3(weights=None, aux_logits=True, init_weights=False), path,
                                   "inception")
    return FeatureSpace("inception", lambda images: embed_with_module(model, images, input_size=299, rgb=True),
                        source=weights_stamp(path))


def load_radimagenet_space(weights: str) -> FeatureSpace:
    """RadImageNet ResNet50 pool features (2048-d, 224 px) from a local torchvision-layout state dict."""
    path = _require_file(weights, "radimagenet", "radimagenet_weights")
    from torchvision.models import resnet50

    model = _load_feature_backbone(resnet50(weights=None), path, "radimagenet")
    return FeatureSpace("radimagenet", lambda images: embed_with_module(model, images, input_size=224, rgb=True),
                        source=weights_stamp(path))


def load_dinov2_space(model_dir: str) -> FeatureSpace:
    """DINOv2 CLS embeddings from a local transformers folder (never downloads, never runs remote code)."""
    path = _require_file(model_dir, "dinov2", "dinov2_dir")
    from transformers import Dinov2Model  # imported late: transformers takes seconds to import

    try:
        model = Dinov2Model.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a DINOv2 model folder (config.json + weights from save_pretrained): "
                        f"{str(exc).splitlines()[0]}") from exc
    size = int(model.config.image_size)
    return FeatureSpace("dinov2", lambda images: embed_with_module(
        model, images, input_size=size, rgb=True, output=lambda out: out.pooler_output), source=weights_stamp(path))


def build_feature_spaces(
    names: list[str] | tuple[str, ...],
    *,
    classifier_dir: str | os.PathLike | None = None,
    inception_weights: str = "",
    dinov2_dir: str = "",
    radimagenet_weights: str = "",
) -> tuple[list[FeatureSpace], list[str]]:
    """The requested spaces, and warnings for those skipped (only `classifier` without a run folder)."""
    spaces, warnings = [], []
    for name in names:
        if name == "stats":
            spaces.append(FeatureSpace("stats", stats_features, standardize=True))
        elif name == "classifier":
            if classifier_dir is None:
                warnings.append("feature space 'classifier' skipped: no classifier run given (--classifier RUN)")
                continue
            spaces.append(load_classifier_space(classifier_dir))
        elif name == "inception":
            spaces.append(load_inception_space(inception_weights))
        elif name == "dinov2":
            spaces.append(load_dinov2_space(dinov2_dir))
        elif name == "radimagenet":
            spaces.append(load_radimagenet_space(radimagenet_weights))
        else:
            raise UserError(f"unknown feature space '{name}'; use some of {', '.join(SPACES)}")
    return spaces, warnings
