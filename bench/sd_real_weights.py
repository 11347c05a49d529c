"""Checks that need real SD-Turbo weights (a GPU session with a local copy): what issue 14 is about on real models.

    python bench/sd_real_weights.py --model .device/sd-turbo --out /tmp/sdreal     # ~5 min on one H100-class GPU

Phantom (256 px) -> `data prepare` -> LoRA fine-tune (rank 8, alpha 16, EMA, 300 steps) -> sample 16 per class with
the default multi-step recipe (`finetuned`) and with 1-step `turbo`, both in fp16 -> one JSON line:
sharpness (mean gradient magnitude) of each set relative to the real train slices (1-step after a fine-tune is
expected well below the multi-step set), NaN-free fp16 sampling, the LoRA scale after reloading (alpha / rank = 2:
the reloaded UNet's output must match the trained adapter's), and the steps recorded in provenance.
Without --model it exits 0 with "skipped: no weights" (the device gets only the checkout).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def sharpness(images: np.ndarray) -> float:
    x = images.astype(np.float64)
    return float(np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sd_real_weights"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="e.g. 32 with the tests' tiny pipeline (a CPU smoke run)")
    parser.add_argument("--precision", default="fp16", help="fp32 for a CPU smoke run")
    args = parser.parse_args()
    if not args.model or not Path(args.model).is_dir():
        print("skipped: no weights (pass --model with a local sd-turbo folder)")
        return
    from mrisynth.config import from_dict, preset_values
    from mrisynth.data.cache import load_cache
    from mrisynth.data.phantom import PhantomConfig, run_phantom
    from mrisynth.data.prepare import PrepareConfig, run_prepare
    from mrisynth.generate import sd

    out = args.out
    if not (out / "phantom" / "metadata.csv").is_file():
        run_phantom(PhantomConfig(patients=24, size=args.size), out / "phantom")
    if not (out / "data" / "manifest.csv").is_file():
        run_prepare(out / "phantom", out / "data", PrepareConfig())
    cfg = from_dict(sd.TrainConfig, {**preset_values(sd.TrainConfig, "lora"), "model": args.model, "steps": args.steps,
                                     "lora_rank": 8, "lora_alpha": 16, "ema": True, "sample_every": 0, "size": args.size,
                                     "checkpoint_every": args.steps})
    gen = sd.run_train(cfg, data_dir=out / "data", out_dir=out / "gen")
    real = load_cache(out / "data", args.size)
    figures: dict = {"real_sharpness": round(sharpness(real.images[real.indices("train")]), 3)}
    for preset in ("finetuned", "turbo"):
        sample = from_dict(sd.SampleConfig, {**preset_values(sd.SampleConfig, preset), "n_per_class": 16, "precision": args.precision})
        syn = sd.run_sample(gen, sample, out_dir=out / f"syn-{preset}")
        cache = load_cache(syn, args.size)
        figures[f"{preset}_sharpness_vs_real"] = round(sharpness(cache.images) / figures["real_sharpness"], 3)
        figures[f"{preset}_black_images"] = int((cache.images.reshape(len(cache), -1).max(1) == 0).sum())
    figures["lora_reload_max_abs_diff"] = _lora_reload_diff(gen, cfg)
    print(json.dumps(figures))


def _lora_reload_diff(gen: Path, cfg) -> float:
    """Max |output difference| between the trained adapter (rebuilt from the checkpoint) and the reloaded one."""
    import torch

    from mrisynth.checkpoint import load_weights
    from mrisynth.generate import read_generator_info
    from mrisynth.generate.sd_load import add_lora, load_generator_unet, load_unet, resolve_model_dir

    trained = load_unet(resolve_model_dir(cfg.model))
    add_lora(trained, rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=list(cfg.lora_targets))
    ckpt = sorted((gen / "checkpoints").glob("step-*"))[-1]
    trained.load_state_dict(load_weights(ckpt / "ema.safetensors"), strict=False)
    reloaded = load_generator_unet(gen, read_generator_info(gen), dtype=torch.float32)
    x = torch.randn(1, trained.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(1, 77, trained.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = trained.eval()(x, 500, encoder_hidden_states=cond).sample
        b = reloaded(x, 500, encoder_hidden_states=cond).sample
    return float((a - b).abs().max())


if __name__ == "__main__":
    main()
