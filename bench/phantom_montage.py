"""Draw the README montage: phantom slices of each class beside real Figshare slices of the same class.

    python bench/phantom_montage.py [--real /work/shared/data/figshare] [--out docs/phantom_montage.png]

Phantom: default settings, slices from different patients. Real: random slices of the class (skipped when the
Figshare copy is absent). The lesion mask is outlined in the lower row of each phantom block.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mrisynth.data.phantom import PhantomConfig, run_phantom  # noqa: E402

CLASSES = ("glioma", "meningioma", "pituitary")
N_PHANTOM, N_REAL = 4, 3


def pick(rows: list[dict], cls: str, n: int, rng: np.random.Generator, *, one_per_patient: bool) -> list[dict]:
    rows = [r for r in rows if r["class"] == cls]
    if one_per_patient:
        seen, unique = set(), []
        for r in rows:
            if r["patient_id"] not in seen:
                seen.add(r["patient_id"])
                unique.append(r)
        rows = unique
    return [rows[i] for i in rng.choice(len(rows), size=n, replace=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("/work/shared/data/figshare"))
    parser.add_argument("--out", type=Path, default=Path("docs/phantom_montage.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    real_rows = []
    if (args.real / "patients.csv").is_file():
        with open(args.real / "patients.csv", newline="") as f:
            real_rows = list(csv.DictReader(f))
    n_cols = N_PHANTOM + (N_REAL if real_rows else 0)
    fig, axes = plt.subplots(3, n_cols, figsize=(1.9 * n_cols, 1.9 * 3 + 0.4), squeeze=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = run_phantom(PhantomConfig(patients=24, seed=args.seed), Path(tmp) / "phantom")
        with open(root / "metadata.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for i, cls in enumerate(CLASSES):
            for j, r in enumerate(pick(rows, cls, N_PHANTOM, rng, one_per_patient=True)):
                img = np.asarray(Image.open(root / "images" / cls / f"{r['id']}.png"))
                axes[i, j].imshow(img, cmap="gray", vmin=0, vmax=255)
                if j == N_PHANTOM - 1:  # show where the mask lies on one slice per class
                    mask = np.asarray(Image.open(root / "masks" / cls / f"{r['id']}.png")) > 0
                    axes[i, j].contour(mask, levels=[0.5], colors="red", linewidths=0.6)
            for j, r in enumerate(pick(real_rows, cls, N_REAL, rng, one_per_patient=True) if real_rows else []):
                path = next((args.real / "images" / cls).glob(f"{r['id']}.*"))
                axes[i, N_PHANTOM + j].imshow(np.asarray(Image.open(path).convert("L")), cmap="gray", vmin=0, vmax=255)
            axes[i, 0].set_ylabel(cls, fontsize=11)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("phantom (default settings)", loc="left", fontsize=10)
    if real_rows:
        axes[0, N_PHANTOM].set_title("real (Figshare, Cheng et al.)", loc="left", fontsize=10)
    fig.tight_layout(pad=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"montage written to {args.out}")


if __name__ == "__main__":
    main()
