"""Classifier run files on top of the shared checkpoint schema (`mrisynth.checkpoint`).

    RUN/best.safetensors   weights of the best val-loss epoch
    RUN/last.pt            model, optimizer, scheduler, early stopping, history, RNG states, epoch (resumable)
    RUN/classes.json       class order of the outputs
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import yaml
from torch import nn

from mrisynth import checkpoint
from mrisynth.classify.config import ClassifierConfig
from mrisynth.classify.models import build_classifier
from mrisynth.config import from_dict
from mrisynth.data.manifest import CLASSES_NAME, load_classes, save_classes
from mrisynth.errors import UserError
from mrisynth.files import claim_output_dir, read_json

BEST_NAME = "best.safetensors"
LAST_NAME = "last.pt"


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict without torch.compile's `_orig_mod.` prefix."""
    return {k.removeprefix("_orig_mod."): v for k, v in model.state_dict().items()}


def save_best(model: nn.Module, run_dir: Path, *, classes: list[str]) -> None:
    """Write `model`'s weights to RUN/best.safetensors (atomically), and RUN/classes.json if it is missing."""
    checkpoint.save_weights(model_state(model), run_dir / BEST_NAME)
    if not (run_dir / CLASSES_NAME).is_file():
        save_classes(classes, run_dir)


def load_best(model: nn.Module, run_dir: Path) -> None:
    """Load RUN/best.safetensors into `model` (strict: the run's own architecture)."""
    # A rerun does not rewrite the best epoch's weights (resuming trains no epoch again): only a fresh run can.
    remedy = f"the best epoch's weights cannot be rebuilt: delete the run folder {run_dir} and train it again"
    model.load_state_dict(checkpoint.load_weights(run_dir / BEST_NAME, remedy=remedy))


# What a classifier run folder holds (a study trial adds trial.json / failed.json before training starts).
_RUN_FILES = {"config.yaml", "metrics.jsonl", LAST_NAME, BEST_NAME, CLASSES_NAME, "predictions.csv", "result.json",
              "trial.json", "failed.json"}


def claim_run_dir(run_dir: str | os.PathLike) -> contextlib.AbstractContextManager:
    """Hold `run_dir` as a classifier run for a block (files.claim_output_dir): another kind of output there, or
    a second training process on it, is refused. Only the main process of a data-parallel launch holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext(Path(run_dir))
    return claim_output_dir(run_dir, "classifier", legacy=is_classifier_run)


def is_classifier_run(path: Path) -> bool:
    """A classifier run (or study trial) folder written before output markers existed: only its own files."""
    names = {p.name for p in path.iterdir() if not p.name.startswith(".")}
    return bool(names) and names <= _RUN_FILES and bool(names - {"config.yaml", CLASSES_NAME})


def load_classifier(run_dir: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a trained classifier from `run_dir/config.yaml` with its best weights, in eval mode on the CPU.

    Returns (model, info): info = {"classes", "model", "image_size", "config" (config.yaml), "result" (or None)}.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file() or not (run_dir / BEST_NAME).is_file():
        raise UserError(f"{run_dir} is not a trained classifier run (needs config.yaml and {BEST_NAME})")
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    cfg = from_dict(ClassifierConfig, raw.get("classifier"), where="classifier.")
    classes = load_classes(run_dir)
    model = build_classifier(cfg.model, len(classes))
    load_best(model, run_dir)
    result_path = run_dir / "result.json"
    result = read_json(result_path) if result_path.is_file() else None
    info = {"classes": classes, "config": raw, "result": result, "model": cfg.model, "image_size": cfg.image_size}
    return model.eval(), info
