"""Train-on-real, test-on-synthetic for the DDPM backend on the built-in phantom, at the demo budget.

    python bench/ddpm_tstr.py --out /tmp/tstr                      # demo preset, 200 images per class
    python bench/ddpm_tstr.py --out /tmp/tstr --steps 300 --threads 1

Steps: phantom (64 px) -> `data prepare` (patient split) -> DDPM `demo` preset on the train split -> sample with
preset `fast` -> a tiny ResNet trained on the real train split (val for early stopping) -> its accuracy on the
real test split (the ceiling) and on the synthetic images (chance = 1/3). Prints one JSON line with the figures
and the wall times (training, sampling and images/s), which is what the demo's time budget depends on.
Rerunning with the same --out resumes every step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mrisynth.classify.checkpoint import load_classifier
from mrisynth.classify.config import ClassifierConfig
from mrisynth.classify.data import TrainData
from mrisynth.classify.train import evaluate, fit
from mrisynth.config import from_dict, preset_values
from mrisynth.data.cache import load_cache
from mrisynth.data.phantom import PhantomConfig, run_phantom
from mrisynth.data.prepare import PrepareConfig, run_prepare
from mrisynth.generate import ddpm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None, help="DDPM training steps (default: the demo preset's)")
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument("--sample-preset", default="fast")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    figures: dict = {"threads": torch.get_num_threads()}

    if not (out / "phantom" / "metadata.csv").is_file():
        run_phantom(PhantomConfig(patients=args.patients, size=args.size), out / "phantom")
    if not (out / "data" / "manifest.csv").is_file():
        run_prepare(out / "phantom", out / "data", PrepareConfig())

    train_cfg = from_dict(ddpm.TrainConfig, {**preset_values(ddpm.TrainConfig, "demo"), "image_size": args.size})
    if args.steps:
        train_cfg = from_dict(ddpm.TrainConfig, {**preset_values(ddpm.TrainConfig, "demo"), "image_size": args.size,
                                                 "steps": args.steps})
    tick = time.perf_counter()
    ddpm.run_train(train_cfg, data_dir=out / "data", out_dir=out / "gen")
    figures["train_s"] = round(time.perf_counter() - tick, 1)
    figures["train_steps"] = train_cfg.steps

    sample = {**preset_values(ddpm.SampleConfig, args.sample_preset), "n_per_class": args.n_per_class}
    if args.guidance is not None:
        sample["guidance"] = args.guidance
    sample_cfg = from_dict(ddpm.SampleConfig, sample)
    syn_dir = out / f"synthetic-{sample_cfg.sampler}-{sample_cfg.steps}-g{sample_cfg.guidance:g}"
    tick = time.perf_counter()
    ddpm.run_sample(out / "gen", sample_cfg, out_dir=syn_dir)
    sample_s = time.perf_counter() - tick
    figures.update(sample_s=round(sample_s, 1), sampler=sample_cfg.sampler, sample_steps=sample_cfg.steps,
                   guidance=sample_cfg.guidance)

    clf_cfg = from_dict(ClassifierConfig, {**preset_values(ClassifierConfig, "tiny"), "image_size": args.size, "epochs": 15})
    fit(clf_cfg, TrainData(real_dir=out / "data"), out / "classifier")
    model, info = load_classifier(out / "classifier")
    real = load_cache(out / "data", args.size)
    test_rows = real.indices("test")
    syn = load_cache(syn_dir, args.size)
    figures["images_per_s"] = round(len(syn) / max(sample_s, 1e-9), 1) if sample_s > 5 else None
    for name, images, labels in (
        ("real_test", real.images[test_rows], real.labels[test_rows]),
        ("synthetic", syn.images, syn.labels),
    ):
        metrics, _ = evaluate(model, np.array(images), labels, batch_size=128, device="cpu")
        figures[f"{name}_accuracy"] = round(float(metrics["accuracy"]), 4)
        figures[f"{name}_n"] = len(labels)
    figures["chance"] = round(1 / len(info["classes"]), 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
