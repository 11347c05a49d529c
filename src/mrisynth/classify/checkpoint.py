"""Classifier checkpoints: weights as safetensors (best.safetensors), training state as last.pt.

last.pt holds model, optimizer, scheduler, early-stopping state, epoch history and RNG states; it is written
with `torch.save` and read with `torch.load(weights_only=True)`, always through an atomic rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mrisynth.errors import UserError
from mrisynth.files import atomic_path

BEST_NAME = "best.safetensors"
LAST_NAME = "last.pt"


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU state dict without torch.compile's `_orig_mod.` prefix, tensors contiguous (as safetensors needs)."""
    return {k.removeprefix("_orig_mod."): v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | os.PathLike, *, classes: list[str], model_name: str) -> None:
    """Weights plus the class order and model name in the safetensors metadata."""
    with atomic_path(path) as tmp:
        save_file(model_state(model), str(tmp), metadata={"classes": json.dumps(classes), "model": model_name})


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load weights saved by `save_weights` into `model` (strict: a mismatch is an error)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; the run has not finished an epoch yet")
    model.load_state_dict(load_file(str(path)))


def save_training_state(path: str | os.PathLike, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | os.PathLike) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path} is unreadable ({exc.__class__.__name__}); delete it to restart the run") from exc


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_classifier(run_dir: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a trained classifier from `run_dir/config.yaml` with its best weights, in eval mode on the CPU.

    Returns (model, info) with info = {"classes", "config" (the run's config.yaml), "result" (or None)}.
    """
    import yaml
    from safetensors import safe_open

    from mrisynth.classify.config import ClassifierConfig
    from mrisynth.classify.models import build_classifier
    from mrisynth.config import from_dict
    from mrisynth.files import read_json

    run_dir = Path(run_dir)
    config_path, best = run_dir / "config.yaml", run_dir / BEST_NAME
    if not config_path.is_file() or not best.is_file():
        raise UserError(f"{run_dir} is not a trained classifier run (needs config.yaml and {BEST_NAME})")
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    cfg = from_dict(ClassifierConfig, raw.get("classifier"), where="classifier.")
    with safe_open(str(best), framework="pt") as f:
        classes = json.loads((f.metadata() or {})["classes"])
    model = build_classifier(cfg.model, len(classes))
    load_weights(model, best)
    result_path = run_dir / "result.json"
    result = read_json(result_path) if result_path.is_file() else None
    return model.eval(), {"classes": classes, "config": raw, "result": result}
