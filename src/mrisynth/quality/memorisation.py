"""Copy detection: does a synthetic image reproduce a training scan (a patient's slice)?

For each synthetic image we find its nearest training image by
  (a) pixel correlation: 64 px thumbnails z-scored and L2-normalised, so a dot product is Pearson's r; training
      images are also compared left-right and up-down flipped (a flipped copy is still a copy);
  (b) feature cosine in each audited feature space.
The share above a threshold is reported, next to the same nearest-neighbour search for held-out real images
(val split) in train: adjacent slices of one patient are near-duplicates, so real held-out images can be
"near" too, and the synthetic numbers only mean something next to that reference.
img2img outputs are also compared with their own source image (`source_image_id`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mrisynth.data.manifest import ImageRecord

log = logging.getLogger(__name__)

FLIPS = ("none", "hflip", "vflip")


@dataclasses.dataclass
class MemorisationConfig:
    """Thresholds and sizes of the copy check (a part of AuditConfig)."""

    thumbnail_size: int = 64
    # Pearson r of z-scored 64 px thumbnails. On Figshare (patient split) held-out real slices of other patients
    # reach r = 0.967 with their nearest training slice (head outlines dominate), while lightly noised copies
    # score above 0.997 (audit at 128 px; at 64 px the thumbnails no longer average pixel noise and noisy copies
    # drop to ~0.978): 0.98 separates the two; read it next to `heldout_in_train`.
    pixel_threshold: float = 0.98
    feature_threshold: float = 0.98  # cosine of features
    n_worst_pairs: int = 16
    chunk: int = 1024  # query rows per matmul: bounds memory at chunk x (3 x N_train) floats


def pixel_vectors(images: np.ndarray, *, size: int = 64) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, size*size) float32 rows with zero mean and unit norm (dot product = correlation).

    A constant image becomes a zero row (correlation 0 with everything).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]  # (N, 1, S, S)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def unit_rows(features: np.ndarray) -> torch.Tensor:
    """(N, D) features -> float32 rows of unit norm (dot product = cosine)."""
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_neighbours(query: torch.Tensor, ref: torch.Tensor, *, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each query row the largest dot product with a ref row and its index: (Q,) float, (Q,) int.

    Chunked over queries so memory stays at chunk x R however many synthetic images there are.
    """
    best, where = [], []
    for start in range(0, len(query), chunk):
        sims = query[start:start + chunk] @ ref.T  # (chunk, R)
        value, index = sims.max(dim=1)
        best.append(value)
        where.append(index)
    if not best:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return torch.cat(best).double().numpy(), torch.cat(where).numpy()


def flipped(images: np.ndarray, flip: str) -> np.ndarray:
    """The images unchanged, mirrored left-right (`hflip`) or up-down (`vflip`)."""
    return {"none": images, "hflip": images[:, :, ::-1], "vflip": images[:, ::-1, :]}[flip]


def nearest_train_by_pixels(
    query: np.ndarray, train: np.ndarray, cfg: MemorisationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest training image of each query image by thumbnail correlation, over flips of the training images.

    Returns (correlation (Q,), train index (Q,), flip name (Q,)).
    """
    refs = torch.cat([pixel_vectors(flipped(train, f), size=cfg.thumbnail_size) for f in FLIPS])  # (3T, D)
    corr, idx = nearest_neighbours(pixel_vectors(query, size=cfg.thumbnail_size), refs, chunk=cfg.chunk)
    return corr, idx % len(train), np.array(FLIPS)[idx // len(train)]


def _quantiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    q = np.percentile(values, [50, 95, 99, 100])
    return {"median": float(q[0]), "p95": float(q[1]), "p99": float(q[2]), "max": float(q[3])}


def _share_above(values: np.ndarray, threshold: float) -> float | None:
    return float((values >= threshold).mean()) if len(values) else None


def run_memorisation(
    *,
    synthetic: np.ndarray,
    synthetic_records: list[ImageRecord],
    train: np.ndarray,
    train_records: list[ImageRecord],
    heldout: np.ndarray,
    all_real_records: list[ImageRecord],
    features: dict[str, dict[str, np.ndarray]],
    cfg: MemorisationConfig,
) -> tuple[dict, list[dict], list[tuple[int, int, str, float]]]:
    """The whole copy check.

    `features[space]` holds "synthetic", "train" and "heldout" feature arrays in the row order of the images.
    Returns (summary for quality.json, one CSV row per synthetic image, worst pairs as
    (synthetic index, train index, flip, correlation) sorted worst first).
    """
    warnings: list[str] = []
    corr, idx, flip = nearest_train_by_pixels(synthetic, train, cfg)
    heldout_corr = nearest_train_by_pixels(heldout, train, cfg)[0] if len(heldout) else np.zeros(0)
    reference_p99 = float(np.percentile(heldout_corr, 99)) if len(heldout_corr) else None
    rows = [{
        "synthetic_id": rec.id, "class": rec.class_name,
        "nn_pixel_train_id": train_records[idx[i]].id, "nn_pixel_corr": round(float(corr[i]), 5),
        "nn_pixel_flip": str(flip[i]), "nn_pixel_patient_id": train_records[idx[i]].patient_id,
        "nn_pixel_same_class": train_records[idx[i]].class_name == rec.class_name,
    } for i, rec in enumerate(synthetic_records)]

    summary: dict = {"pixel": {
        "threshold": cfg.pixel_threshold,
        "share_above": _share_above(corr, cfg.pixel_threshold),
        "n_above": int((corr >= cfg.pixel_threshold).sum()),
        "nearest": _quantiles(corr),
        "heldout_in_train": {"n": int(len(heldout_corr)), "nearest": _quantiles(heldout_corr),
                             "share_above": _share_above(heldout_corr, cfg.pixel_threshold)},
        # Calibrated view: how many synthetic images are closer to train than 99% of held-out real images are.
        "share_above_heldout_p99": _share_above(corr, reference_p99) if reference_p99 is not None else None,
    }}

    summary["features"] = {}
    for space, feats in features.items():
        train_unit = unit_rows(feats["train"])
        cos, fidx = nearest_neighbours(unit_rows(feats["synthetic"]), train_unit, chunk=cfg.chunk)
        held_cos = (nearest_neighbours(unit_rows(feats["heldout"]), train_unit, chunk=cfg.chunk)[0]
                    if len(feats["heldout"]) else np.zeros(0))
        for i, row in enumerate(rows):
            row[f"nn_{space}_train_id"] = train_records[fidx[i]].id
            row[f"nn_{space}_cos"] = round(float(cos[i]), 5)
        summary["features"][space] = {
            "threshold": cfg.feature_threshold, "share_above": _share_above(cos, cfg.feature_threshold),
            "nearest": _quantiles(cos),
            "heldout_in_train": {"n": int(len(held_cos)), "nearest": _quantiles(held_cos),
                                 "share_above": _share_above(held_cos, cfg.feature_threshold)},
        }

    summary["img2img"], img2img_warnings = _source_check(synthetic, synthetic_records, train, train_records,
                                                          all_real_records, rows, cfg)
    warnings += img2img_warnings

    copied = [i for i in range(len(rows)) if corr[i] >= cfg.pixel_threshold]
    by_patient: dict[str, list[str]] = defaultdict(list)
    for i in copied:
        by_patient[train_records[idx[i]].patient_id or "(unknown)"].append(synthetic_records[i].id)
    summary["patients_reproduced"] = [
        {"patient_id": pid, "n_synthetic": len(ids), "synthetic_ids": sorted(ids)[:20]}
        for pid, ids in sorted(by_patient.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    order = np.argsort(-corr, kind="stable")[:cfg.n_worst_pairs]
    worst = [(int(i), int(idx[i]), str(flip[i]), float(corr[i])) for i in order]
    summary["worst_pairs"] = [{"synthetic_id": synthetic_records[s].id, "train_id": train_records[t].id,
                               "flip": f, "correlation": c} for s, t, f, c in worst]
    if copied:
        warnings.append(f"{len(copied)} synthetic image(s) correlate >= {cfg.pixel_threshold} with a training image "
                        f"({len(by_patient)} patient(s)); see memorisation.patients_reproduced")
    summary["warnings"] = warnings
    return summary, rows, worst


def _source_check(
    synthetic: np.ndarray,
    synthetic_records: list[ImageRecord],
    train: np.ndarray,
    train_records: list[ImageRecord],
    all_real_records: list[ImageRecord],
    rows: list[dict],
    cfg: MemorisationConfig,
) -> tuple[dict | None, list[str]]:
    """Correlation of each img2img output with its own source image; sources outside train are a leak."""
    with_source = [i for i, r in enumerate(synthetic_records) if r.source_image_id]
    if not with_source:
        return None, []
    warnings = []
    train_pos = {r.id: i for i, r in enumerate(train_records)}
    split_of = {r.id: r.split for r in all_real_records}
    outside = sorted({synthetic_records[i].source_image_id for i in with_source
                      if synthetic_records[i].source_image_id not in train_pos})
    if outside:
        where = split_of.get(outside[0], "not in the real data")
        warnings.append(f"{len(outside)} img2img source image(s) are not training images (e.g. '{outside[0]}': "
                        f"{where}); synthetic images must come from the train split only")
    found = [i for i in with_source if synthetic_records[i].source_image_id in train_pos]
    corr = np.zeros(0)
    if found:
        sources = train[[train_pos[synthetic_records[i].source_image_id] for i in found]]
        a = pixel_vectors(synthetic[found], size=cfg.thumbnail_size)
        b = pixel_vectors(sources, size=cfg.thumbnail_size)
        corr = (a * b).sum(1).double().numpy()
        for i, c in zip(found, corr):
            rows[i]["source_corr"] = round(float(c), 5)
    return {"n": len(with_source), "n_source_outside_train": len(outside), "source_corr": _quantiles(corr),
            "share_above": _share_above(corr, cfg.pixel_threshold)}, warnings


def save_pairs_grid(
    pairs: list[tuple[int, int, str, float]],
    synthetic: np.ndarray,
    train: np.ndarray,
    path: str | os.PathLike,
    *,
    synthetic_ids: list[str],
    train_ids: list[str],
) -> Path:
    """A PNG grid: each row-pair shows a synthetic image above its nearest training image (flip applied)."""
    # A bare Figure renders to PNG without pyplot, so no GUI backend is chosen (or has to be switched off).
    from matplotlib.figure import Figure

    from mrisynth.files import atomic_path

    cols = max(1, min(8, len(pairs)))
    rows = 2 * max(1, -(-len(pairs) // cols))
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (s, t, flip, corr) in enumerate(pairs):
        r, c = 2 * (n // cols), n % cols
        axes[r, c].imshow(synthetic[s], cmap="gray", vmin=0, vmax=255)
        axes[r, c].set_title(f"{synthetic_ids[s][-14:]}\nr={corr:.3f}", fontsize=6)
        axes[r + 1, c].imshow(flipped(train[t:t + 1], flip)[0], cmap="gray", vmin=0, vmax=255)
        axes[r + 1, c].set_title(f"train {train_ids[t][-12:]}" + ("" if flip == "none" else f" ({flip})"), fontsize=6)
    fig.suptitle("Synthetic images (upper) most correlated with a training image (lower)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
