"""Intensity and lesion-size statistics of a labelled image folder (real Figshare copy or a phantom).

    python bench/phantom_stats.py /work/shared/data/figshare      # real data
    python bench/phantom_stats.py /tmp/phantom                    # a `mrisynth data phantom` output

Reads `images/<class>/<id>.*` with `masks/<class>/<id>.png` and prints, per class: head (foreground) mean
intensity, lesion-to-head contrast (mean inside mask / mean of the rest of the head), lesion area as a
fraction of the image (5th / 50th / 95th percentile) and the lesion centroid's distance from the head centre
(as a fraction of the head radius). Used to tune the phantom towards the real data; figures go in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

FOREGROUND = 20  # grey level above which a pixel counts as head, not background (8-bit images)


def slice_stats(img: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Statistics of one slice: img uint8 (H, W), mask bool (H, W)."""
    head = img > FOREGROUND
    rest = head & ~mask
    ys, xs = np.nonzero(head)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt(head.sum() / np.pi)
    my, mx = np.nonzero(mask)
    return {
        "head_mean": float(img[head].mean()),
        "contrast": float(img[mask].mean() / max(img[rest].mean(), 1.0)),
        "area": float(mask.mean()),
        "offcentre": float(np.hypot(my.mean() - cy, mx.mean() - cx) / radius),
    }


def folder_stats(root: Path, *, limit: int = 400) -> dict[str, dict[str, np.ndarray]]:
    """Per class, arrays of slice statistics over at most `limit` slices (evenly spaced)."""
    out = {}
    for class_dir in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        files = files[:: max(1, len(files) // limit)]
        rows = []
        for f in files:
            mask_file = root / "masks" / class_dir.name / f"{f.stem}.png"
            mask = np.asarray(Image.open(mask_file).convert("L")) > 127
            if not mask.any():
                continue
            img = np.asarray(Image.open(f).convert("L"))
            rows.append(slice_stats(img, mask))
        out[class_dir.name] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=400, help="slices per class to read")
    args = parser.parse_args()
    print(f"{args.folder}")
    print(f"{'class':<11} {'n':>4} {'head mean':>9} {'contrast med [p5-p95]':>22} "
          f"{'area % med [p5-p95]':>22} {'off-centre med':>14}")
    for name, s in folder_stats(args.folder, limit=args.limit).items():
        c5, c50, c95 = np.percentile(s["contrast"], [5, 50, 95])
        a5, a50, a95 = np.percentile(100 * s["area"], [5, 50, 95])
        print(f"{name:<11} {len(s['area']):>4} {s['head_mean'].mean():>9.1f} "
              f"{c50:>8.2f} [{c5:.2f}-{c95:.2f}]   {a50:>6.2f} [{a5:.2f}-{a95:.2f}]   "
              f"{np.median(s['offcentre']):>10.2f}")


if __name__ == "__main__":
    main()
