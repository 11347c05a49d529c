"""What an SD fine-tune shows while it trains: preview grids and validation draws, with the sampling recipe.

    GEN/samples/grid-XXXXXXX.png   one image per class, fixed seeds (so grids of different steps compare)
    GEN/metrics.jsonl              {"step", "val_*"} records (see generate/validation.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mrisynth import checkpoint
from mrisynth.data.images import save_grayscale_png
from mrisynth.files import append_jsonl, atomic_path, ensure_writable_dir
from mrisynth.generate.recipe import sample_recipe
from mrisynth.generate.sd_config import SampleConfig, TrainConfig
from mrisynth.generate.sd_load import load_vae
from mrisynth.generate.sd_sample import build_sampler
from mrisynth.generate.validation import BestKeeper, ValidationFn, validation_draw, validation_record
from mrisynth.seeding import derive_seed

if TYPE_CHECKING:  # annotations only: importing diffusers costs seconds
    from diffusers import UNet2DConditionModel


@contextlib.contextmanager
def averaged(trainable: dict, ema: dict | None) -> Iterator[None]:
    """Hold the EMA weights in the model for the block (what `_save_result` will save), then the raw ones again."""
    if ema is None:
        yield
        return
    raw = {n: p.detach().clone() for n, p in trainable.items()}
    for n, p in trainable.items():
        p.data.copy_(ema[n])
    try:
        yield
    finally:
        for n, p in trainable.items():
            p.data.copy_(raw[n])


class Previews:
    """Grids and validation draws during training, both with the sampling recipe `generator sample` will use.

    An img2img recipe previews as text2img with the same scheduler, steps and guidance (no source images here).
    """

    def __init__(self, cfg: TrainConfig, model_dir: Path, embeds: torch.Tensor, device: torch.device) -> None:
        self.cfg, self.model_dir, self.embeds = cfg, model_dir, embeds
        self.recipe = sample_recipe(SampleConfig, cfg.sample_preset)
        self.vae = load_vae(model_dir).to(device) if (cfg.sample_every or cfg.val_every) else None

    def due(self, done: int) -> bool:
        return self._grid_due(done) or self._val_due(done)

    def _grid_due(self, done: int) -> bool:
        return bool(self.cfg.sample_every) and done % self.cfg.sample_every == 0

    def _val_due(self, done: int) -> bool:
        return bool(self.cfg.val_every) and (done % self.cfg.val_every == 0 or done == self.cfg.steps)

    @torch.no_grad()
    def run(self, done: int, unet: UNet2DConditionModel, *, out: Path, validate: ValidationFn | None,
            best: BestKeeper, trainable: dict) -> None:
        """The grid and/or the validation record of step `done` (the model is in eval mode meanwhile)."""
        unet.eval()
        sampler = build_sampler(unet, self.vae, self.embeds, self.model_dir, self.recipe, size=self.cfg.size)
        n_classes = len(self.embeds) - 1
        if self._grid_due(done):
            seeds = [derive_seed("sd-grid", i) for i in range(n_classes)]
            images = self._draw(sampler, np.arange(n_classes), seeds)  # one image per class, side by side
            with atomic_path(ensure_writable_dir(out / "samples") / f"grid-{done:07d}.png") as tmp:
                save_grayscale_png(np.concatenate(list(images), axis=1), tmp)
        if self._val_due(done) and validate is not None:
            labels, seeds = validation_draw(n_classes, self.cfg.val_per_class)
            record = validation_record(done, self._draw(sampler, labels, seeds), labels, validate)
            append_jsonl(out / "metrics.jsonl", record)
            if best.improves(record):
                best.save(record, lambda folder: checkpoint.save_weights(trainable, folder / "weights.safetensors"))
        unet.train()

    def _draw(self, sampler, labels: np.ndarray, seeds: list[int]) -> np.ndarray:
        recipe, out = dataclasses.replace(self.recipe, mode="text2img"), []
        device = self.embeds.device
        for i in range(0, len(labels), recipe.batch_size):
            part = torch.as_tensor(labels[i:i + recipe.batch_size], device=device)
            out.append(sampler.images(part, seeds[i:i + recipe.batch_size], recipe))
        return np.concatenate(out)
