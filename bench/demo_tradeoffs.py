"""How the demo's generator choices trade wall time against audit quality, one candidate per run.

    python bench/demo_tradeoffs.py --out /tmp/dt/a                                   # the demo's own settings
    python bench/demo_tradeoffs.py --out /tmp/dt/b --train image_size=32 --train patch=1 --train steps=2000

The demo study's data (phantom, patient split 60/20/20), then the DDPM trained with the demo preset plus the
--train differences, `--per-class` images per class drawn with the fast sampling recipe plus the --sample
differences, and the audit the demo runs (stats space at 32 px). Prints one JSON line: seconds per stage, the
stats-space precision and FD overall and their real-vs-real baselines, and the five stats features on which the
synthetic set is furthest from the real one (standardised mean difference), which says what the generator misses.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import peak_host_mib

from mrisynth.config import from_dict, load_config, parse_overrides, preset_values, to_dict
from mrisynth.data.cache import load_cache
from mrisynth.data.phantom import PhantomConfig, run_phantom
from mrisynth.data.prepare import PrepareConfig, run_prepare
from mrisynth.generate import ddpm
from mrisynth.quality.audit import AuditConfig, run_audit
from mrisynth.quality.features import stats_features
from mrisynth.study.config import StudyConfig

STATS_NAMES = (["mean", "std", "skew", "kurtosis", "foreground"] + [f"q{q}" for q in (5, 25, 50, 75, 95)]
               + ["grad_mean", "grad_std", "grad_q50", "grad_q90", "grad_q99"]
               + [f"diff_{axis}{d}" for axis in "xy" for d in (1, 2, 4)] + [f"power_band{b}" for b in range(8)])


def furthest_features(real: np.ndarray, fake: np.ndarray, top: int = 5) -> dict[str, float]:
    """The `top` stats features with the largest |mean difference| in units of the real set's SD."""
    fr, ff = stats_features(real), stats_features(fake)
    smd = (ff.mean(0) - fr.mean(0)) / fr.std(0).clip(min=1e-9)
    order = np.argsort(-np.abs(smd))[:top]
    return {STATS_NAMES[i]: round(float(smd[i]), 2) for i in order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train", action="append", default=[], help="a DDPM train setting, KEY=VALUE")
    parser.add_argument("--sample", action="append", default=[], help="a DDPM sample setting, KEY=VALUE")
    parser.add_argument("--data", action="append", default=[], help="a study data setting, e.g. phantom.size=48")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--reuse", type=Path, help="an earlier --out: sample from its data and generator, no training")
    args = parser.parse_args()
    out: Path = args.out
    run = args.reuse or out  # where the data and the generator live
    study = load_config(StudyConfig, "demo", overrides=[f"data.{s}" for s in args.data])
    times: dict[str, float] = {}

    tick = time.perf_counter()
    if not (run / "phantom" / "metadata.csv").is_file():
        run_phantom(from_dict(PhantomConfig, to_dict(study.data.phantom)), run / "phantom")
    if not (run / "data" / "manifest.csv").is_file():
        run_prepare(run / "phantom", run / "data", from_dict(PrepareConfig, to_dict(study.data.prepare)))
    times["data_s"] = time.perf_counter() - tick

    train = from_dict(ddpm.TrainConfig, {**preset_values(ddpm.TrainConfig, "demo"), **parse_overrides(args.train)})
    tick = time.perf_counter()
    if args.reuse is None:
        ddpm.run_train(train, data_dir=run / "data", out_dir=run / "gen")
    times["train_s"] = time.perf_counter() - tick

    sample = from_dict(ddpm.SampleConfig, {**preset_values(ddpm.SampleConfig, "fast"), "n_per_class": args.per_class,
                                          **parse_overrides(args.sample)})
    tick = time.perf_counter()
    ddpm.run_sample(run / "gen", sample, out_dir=out / "syn")
    times["sample_s"] = time.perf_counter() - tick

    audit_cfg: AuditConfig = study.audit.settings
    tick = time.perf_counter()
    quality = run_audit(audit_cfg, real_dir=run / "data", synthetic_dir=out / "syn", out_dir=out / "audit")
    times["audit_s"] = time.perf_counter() - tick

    stats_all = quality["feature_spaces"]["stats"]
    stats = stats_all["overall"]
    real = load_cache(run / "data", audit_cfg.image_size)
    fake = load_cache(out / "syn", audit_cfg.image_size)
    print(json.dumps({
        "train": parse_overrides(args.train), "sample": parse_overrides(args.sample), "data": args.data,
        **{k: round(v, 1) for k, v in times.items()},
        "precision": stats.get("precision"), "recall": stats.get("recall"), "fd": stats.get("fd"),
        "real_vs_real": {k: stats_all["real_vs_real"]["overall"].get(k) for k in ("precision", "fd")},
        "furthest_features": furthest_features(real.images[real.indices("train")], fake.images),
        "peak_host_mib": round(peak_host_mib()),
    }, default=str))


if __name__ == "__main__":
    main()
