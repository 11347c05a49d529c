"""The validation curve of the DDPM `demo` preset on the built-in phantom: val_fd / val_kid / val_tstr_acc by step.

    python bench/ddpm_validation_curve.py --out /tmp/valcurve                 # 600 steps, validation every 100
    python bench/ddpm_validation_curve.py --out /tmp/valcurve --steps 1000 --every 200

Phantom (64 px, 60 patients) -> `data prepare` (patient split) -> DDPM `demo` preset trained with validation while
training (mrisynth.quality.generator_validation: stats-space FD/KID against the real val slices, TSTR-lite accuracy
against a classifier trained on the real train slices; chance = 1/3) -> one JSON line: the curve and the time
validation cost. Rerunning with the same --out resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mrisynth.config import from_dict, preset_values
from mrisynth.data.phantom import PhantomConfig, run_phantom
from mrisynth.data.prepare import PrepareConfig, run_prepare
from mrisynth.files import read_jsonl
from mrisynth.generate import ddpm
from mrisynth.quality.generator_validation import build_generator_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=32)
    args = parser.parse_args()
    out: Path = args.out
    if not (out / "phantom" / "metadata.csv").is_file():
        run_phantom(PhantomConfig(patients=60, size=64), out / "phantom")
    if not (out / "data" / "manifest.csv").is_file():
        run_prepare(out / "phantom", out / "data", PrepareConfig())
    cfg = from_dict(ddpm.TrainConfig, {**preset_values(ddpm.TrainConfig, "demo"), "steps": args.steps, "val_every": args.every,
                                       "val_per_class": args.per_class, "keep_best": "val_fd", "grid_every": 0})
    validate = build_generator_validation(out / "data", image_size=cfg.image_size, fit=cfg.fit, seed=cfg.seed)
    spent = [0.0]

    def timed(images, labels):
        tick = time.perf_counter()
        scores = validate(images, labels)
        spent[0] += time.perf_counter() - tick
        return scores

    tick = time.perf_counter()
    ddpm.run_train(cfg, data_dir=out / "data", out_dir=out / "gen", validate=timed)
    curve = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
             for r in read_jsonl(out / "gen" / "metrics.jsonl") if "val_fd" in r]
    print(json.dumps({"steps": args.steps, "val_every": args.every, "val_per_class": args.per_class,
                      "train_s": round(time.perf_counter() - tick, 1), "scoring_s": round(spent[0], 1),
                      "curve": curve}))


if __name__ == "__main__":
    main()
