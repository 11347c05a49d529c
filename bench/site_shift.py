"""Does a classifier trained at one scanner site work at another, and which intensity normalisation helps?

    python bench/site_shift.py [--patients 60] [--external-patients 30] [--epochs 20] [--seeds 2]

Trains mrisynth's classifier (the `tiny` ResNet, 64 px, the reference augmentation) on a site-A phantom (patient
split) once per normalisation (none, percentile, zscore) and seed, then scores every run on its own test split
(internal) and, with `run_evaluate`, on new patients imaged at site A and the *same* new patients imaged at site B
(data/phantom_site.py). The A-external vs B-external gap is the scanner's effect alone. Prints one table (mean
over seeds) and writes it as JSON with --json.

Each run is checked: evaluating its own test split through `run_evaluate` must reproduce the accuracy training
reported, which holds only when training and evaluation apply the same normalisation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrisynth.classify import ClassifierConfig, TrainData, fit
from mrisynth.classify.inference import run_evaluate
from mrisynth.data.normalize import METHODS
from mrisynth.data.phantom import PhantomConfig, run_phantom
from mrisynth.data.prepare import PrepareConfig, run_prepare


def build_sets(root: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Site-A training data (prepared, patient split) and two external sets of the same new patients (A, B)."""
    train_src = run_phantom(PhantomConfig(patients=args.patients, size=args.size, seed=0), root / "phantom_a")
    external = {site: run_phantom(PhantomConfig(patients=args.external_patients, size=args.size, seed=1, site=site),
                                  root / f"external_{site}") for site in ("A", "B")}
    data = run_prepare(train_src, root / "data", PrepareConfig(split="patient"))
    return {"data": data, "A": external["A"], "B": external["B"]}


def one_run(sets: dict[str, Path], out: Path, *, normalize: str, seed: int, args: argparse.Namespace) -> dict:
    cfg = ClassifierConfig(model="tiny", image_size=args.size, epochs=args.epochs, batch_size=32,
                           eval_batch_size=256, normalize=normalize, seed=seed, device="cpu",
                           early_stopping_patience=6)
    result = fit(cfg, TrainData(real_dir=sets["data"]), out)
    own = run_evaluate(out, sets["data"], out=out / "own_test", split="test", device="cpu")
    if abs(own["accuracy"] - result["test"]["accuracy"]) > 1e-9:
        raise SystemExit(f"{out}: evaluate gives test accuracy {own['accuracy']:.4f}, training gave "
                         f"{result['test']['accuracy']:.4f}: training did not apply normalize={normalize}")
    row = {"internal": result["test"]["accuracy"]}
    for site in ("A", "B"):
        m = run_evaluate(out, sets[site], out=out / f"site_{site}", device="cpu")
        row[f"site_{site}"] = m["accuracy"]
        row[f"site_{site}_f1_macro"] = m["f1_macro"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60, help="site-A patients for train/val/test (8 slices each)")
    parser.add_argument("--external-patients", type=int, default=30, help="new patients imaged at sites A and B")
    parser.add_argument("--size", type=int, default=64, help="phantom and model input size in pixels")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the table here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table: dict[str, list[dict]] = {m: [] for m in METHODS}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(Path(tmp), args)
        for normalize in METHODS:
            for seed in range(args.seeds):
                row = one_run(sets, Path(tmp) / f"{normalize}-s{seed}", normalize=normalize, seed=seed, args=args)
                table[normalize].append(row)
                print(f"{normalize:>10} seed {seed}: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    print(f"\n{'normalize':>10}  {'internal':>8}  {'site A ext':>10}  {'site B ext':>10}  {'B - A':>6}   (mean of "
          f"{args.seeds} seeds; {time.perf_counter() - t0:.0f} s)")
    summary = {}
    for normalize, rows in table.items():
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        summary[normalize] = {"mean": mean, "runs": rows}
        print(f"{normalize:>10}  {mean['internal']:8.3f}  {mean['site_A']:10.3f}  {mean['site_B']:10.3f}  "
              f"{mean['site_B'] - mean['site_A']:+6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "table": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
