"""Drawing a labelled synthetic set from a trained DDPM generator (resumable, one seed per image)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from mrisynth.config import save_config
from mrisynth.devices import resolve_device
from mrisynth.errors import UserError
from mrisynth.files import sha256_dir
from mrisynth.generate import read_generator_info
from mrisynth.generate.ddpm_config import SampleConfig
from mrisynth.generate.ddpm_model import (
    build_sampler,
    denoise,
    patch_size,
    seeded_noise,
    to_uint8_images,
)
from mrisynth.generate.output import SyntheticWriter, claim_synthetic_dir, synthetic_id
from mrisynth.generate.recipe import per_class_counts
from mrisynth.runfolder import check_same_run
from mrisynth.seeding import derive_seed

log = logging.getLogger(__name__)

# A rerun may change how the work is cut up, not what each image is.
_MAY_CHANGE = ("n_per_class", "counts", "classes", "batch_size", "device")


def load_unet(gen_dir: str | os.PathLike, *, device: torch.device) -> UNet2DModel:
    """The trained (EMA) UNet of a generator folder, from local files only, in eval mode."""
    path = Path(gen_dir) / "unet"
    if not path.is_dir():
        raise UserError(f"{gen_dir} has no unet/ folder; train it again with `mrisynth generator train`")
    try:
        unet = UNet2DModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # truncated, foreign or missing weights
        raise UserError(f"cannot load the UNet in {path} ({exc.__class__.__name__}); the generator is damaged: "
                        "train it again with `mrisynth generator train`") from exc
    return unet.to(device).eval()


def image_seed(seed: int, class_name: str, index: int) -> int:
    """The seed of one synthetic image: the same image comes back alone or in any batch."""
    return derive_seed("ddpm-sample", seed, class_name, index)


def generate(
    unet: UNet2DModel,
    scheduler_config: dict,
    labels: list[int],
    seeds: list[int],
    *,
    sampler: str = "dpm++",
    steps: int = 20,
    guidance: float = 2.0,
) -> np.ndarray:
    """Images for (label, seed) pairs, as one batch: (B, S, S) uint8."""
    size = unet.config.sample_size * patch_size(unet)
    x = denoise(unet, build_sampler(sampler, scheduler_config), torch.tensor(labels), seeded_noise(seeds, size),
                steps=steps, guidance=guidance)
    return to_uint8_images(x)


def run_sample(gen_dir: str | os.PathLike, cfg: SampleConfig, *, out_dir: str | os.PathLike) -> Path:
    """Write the requested images per class to `out_dir` (PNGs + manifest.csv); a rerun skips finished ones."""
    info = read_generator_info(gen_dir)
    if info.get("backend") != "ddpm":
        raise UserError(f"{gen_dir} is a '{info.get('backend')}' generator, not a ddpm one")
    classes: list[str] = info["classes"]
    unknown = sorted(set(cfg.classes) - set(classes))
    if unknown:
        raise UserError(f"class '{unknown[0]}' is not one the generator knows; use some of {', '.join(classes)}")
    counts = per_class_counts(cfg.classes or classes, n_per_class=cfg.n_per_class, counts=cfg.counts)
    checksum = verified_unet_checksum(gen_dir, info)  # weights changed since training are refused here
    device = resolve_device(cfg.device)
    unet = load_unet(gen_dir, device=device)
    scheduler_config = DDPMScheduler.load_config(Path(gen_dir) / "scheduler", local_files_only=True)

    out = Path(out_dir)
    check_same_run(out, cfg, resumable=_MAY_CHANGE)
    with claim_synthetic_dir(out), SyntheticWriter(out, classes, generator_sha256=checksum) as writer:
        save_config(cfg, out / "config.yaml")
        done = writer.existing_ids()
        wanted = [(c, i) for c, n in counts.items() for i in range(n)]
        todo = [(c, i) for c, i in wanted if synthetic_id(c, i) not in done]
        log.info("sampling %d images (%d already written) with %s, %d steps, guidance %.2g",
                 len(todo), len(done), cfg.sampler, cfg.steps, cfg.guidance)
        with tqdm(total=len(todo), desc="ddpm sample", unit="img") as bar:
            for start in range(0, len(todo), cfg.batch_size):
                batch = todo[start:start + cfg.batch_size]
                seeds = [image_seed(cfg.seed, c, i) for c, i in batch]
                images = generate(unet, scheduler_config, [classes.index(c) for c, _ in batch], seeds,
                                  sampler=cfg.sampler, steps=cfg.steps, guidance=cfg.guidance)
                for (class_name, index), seed, image in zip(batch, seeds, images):
                    writer.add(image, image_id=synthetic_id(class_name, index), class_name=class_name, seed=seed,
                               steps=cfg.steps, guidance=cfg.guidance)
                writer.end_batch()  # the PNGs are written while the next batch is drawn
                bar.update(len(batch))
        writer.finish(keep={synthetic_id(c, i) for c, i in wanted})
    return out


def verified_unet_checksum(gen_dir: str | os.PathLike, info: dict) -> str:
    """SHA-256 of GEN/unet/, refused when it differs from the one generator.json recorded at training."""
    actual = sha256_dir(Path(gen_dir) / "unet")
    if info.get("sha256") and actual != info["sha256"]:
        raise UserError(f"{Path(gen_dir) / 'unet'} changed since the generator was trained (sha256 differs from "
                        "generator.json); restore the original files or train the generator again")
    return actual
