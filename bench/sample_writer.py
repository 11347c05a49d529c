"""Sampling images/s with the background PNG writer against the in-line one, measured in the same run.

    python bench/sample_writer.py                      # tiny untrained DDPM, 64 px, 1 step, 384 images
    python bench/sample_writer.py --steps 4 --n 512

Both sides draw the same images with the same model and write a full synthetic set (PNGs, fsync'd provenance,
manifest). In-line ("before", the previous writer): each PNG saved and its provenance line fsync'd on the sampling
thread, one image at a time. Background ("after"): PNGs encoded on a writer thread while the next batch is drawn,
provenance fsync'd once per batch. The two sets are checked to be byte-identical. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mrisynth.generate import ddpm
from mrisynth.generate.output import SyntheticWriter, synthetic_id


def draw_set(unet, config: dict, out: Path, *, n: int, batch: int, steps: int, inline: bool) -> float:
    """Seconds to sample and write `n` images (two classes) into `out`."""
    start = time.perf_counter()
    with SyntheticWriter(out, ["a", "b"], generator_sha256="bench") as writer:
        jobs = [(i % 2, i) for i in range(n)]
        for s in range(0, n, batch):
            part = jobs[s:s + batch]
            images = ddpm.generate(unet, config, [c for c, _ in part], [i for _, i in part], steps=steps,
                                   guidance=1.0)
            for (c, i), image in zip(part, images):
                writer.add(image, image_id=synthetic_id("ab"[c], i), class_name="ab"[c], seed=i, steps=steps,
                           guidance=1.0)
                if inline:
                    writer.flush()  # the previous behaviour: written and fsync'd one by one, in line
            writer.end_batch()
        writer.finish()
    return time.perf_counter() - start


def same_bytes(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    return bool(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=384)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = ddpm.TrainConfig(image_size=args.size, channels=(16, 32), patch=2)
    unet = ddpm.build_unet(cfg, n_classes=2).eval()
    config = ddpm.build_noise_scheduler(cfg).config
    times = {"inline": [], "background": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # alternate the sides so load changes hit both
            for side in ("inline", "background"):
                out = Path(tmp) / f"{side}-{r}"
                times[side].append(draw_set(unet, config, out, n=args.n, batch=args.batch, steps=args.steps,
                                            inline=side == "inline"))
        identical = same_bytes(Path(tmp) / "inline-0", Path(tmp) / "background-0")
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({
        "images": args.n, "steps": args.steps, "size": args.size,
        "inline_img_per_s": round(args.n / best["inline"], 1),
        "background_img_per_s": round(args.n / best["background"], 1),
        "speedup": round(best["inline"] / best["background"], 2), "byte_identical": identical,
    }))


if __name__ == "__main__":
    main()
