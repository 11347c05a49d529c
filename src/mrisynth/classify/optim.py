"""The optimisation side of a classifier run: optimizer, learning-rate schedule and early stopping.

The defaults port the reference Keras recipe (Adam with Keras' eps, ReduceLROnPlateau, EarlyStopping on val loss);
the `fast` preset uses AdamW with a per-step warm-up + cosine schedule.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from mrisynth.classify.config import ClassifierConfig


@dataclasses.dataclass
class EarlyStopping:
    """Keras EarlyStopping(monitor="val_loss", patience, min_delta=0): stop after `patience` epochs without a new best."""

    patience: int | None
    best_loss: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    stopped: bool = False

    def update(self, val_loss: float, epoch: int) -> bool:
        """Record one epoch; True when it is a new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = val_loss, epoch, 0
            return True
        self.wait += 1
        self.stopped = self.patience is not None and self.wait >= self.patience
        return False


def build_optimizer(cfg: ClassifierConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names over all of `model`'s parameters, with `cfg.lr` and weight decay."""
    if cfg.optimizer == "adam":  # Keras Adam defaults: betas (0.9, 0.999), eps 1e-7
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-7, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: ClassifierConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int):
    """A per-epoch ReduceLROnPlateau (stepped with val loss), a per-step warm-up+cosine LambdaLR, or None."""
    if cfg.schedule == "plateau":
        # Keras reduces when `wait >= patience`; torch when `bad_epochs > patience`: hence patience - 1.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=max(cfg.plateau_patience - 1, 0),
            threshold=cfg.plateau_min_delta, threshold_mode="abs", min_lr=cfg.min_lr,
        )
    if cfg.schedule == "cosine":
        warmup = cfg.warmup_epochs * steps_per_epoch
        total = max(cfg.epochs * steps_per_epoch, warmup + 1)
        floor = cfg.min_lr / cfg.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / (total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None
