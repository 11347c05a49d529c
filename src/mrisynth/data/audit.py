"""`mrisynth data audit`: does a split leak? Patients spanning splits and near-duplicate images across splits.

    report = run_leakage_audit("runs/a/data")

Near-duplicates: every image shrunk to a 32 px thumbnail (the packed cache), centred and scaled to unit norm,
so one matrix product gives the Pearson correlation of every cross-split pair. Adjacent slices of one patient
correlate far above unrelated slices; pairs above `threshold` are reported.

Writes under `out_dir` (default `DATA/audit`): `leakage.json` (the numbers), `near_duplicates.csv`
(pairs, highest first), `patients_across_splits.csv`, and `worst_pairs.png` (a grid of the closest pairs).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from mrisynth.data.cache import load_cache
from mrisynth.data.manifest import SPLITS, ImageRecord, load_manifest
from mrisynth.data.splits import patient_key
from mrisynth.errors import UserError
from mrisynth.files import atomic_path, claim_output_dir, write_csv, write_json

log = logging.getLogger(__name__)

THUMB_SIZE = 32
# On the Figshare slices at 32 px, r >= 0.95 finds 567 cross-split pairs on the reference image-level split
# (527 within one patient) against 35 on a person-level split: adjacent slices, not look-alike anatomy.
DEFAULT_THRESHOLD = 0.95
_SPLIT_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
_CHUNK = 2048  # rows per matrix product: bounds memory on large data sets


def run_leakage_audit(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    group_trailing_letter: bool = False,
    grid_pairs: int = 12,
) -> dict:
    """Audit a prepared data folder for leakage between its splits; returns the numbers written to leakage.json."""
    if not -1.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be a correlation between -1 and 1; got {threshold}")
    data_dir = Path(data_dir)
    load_manifest(data_dir)  # no manifest: say so before making an audit folder
    out_dir = Path(out_dir) if out_dir else data_dir / "audit"
    with claim_output_dir(out_dir, "leakage-audit"):  # refused before any work if it holds other output
        cache = load_cache(data_dir, THUMB_SIZE)
        records = cache.records
        if not any(r.split in SPLITS for r in records):
            raise UserError(f"{data_dir} has no train/val/test splits; run `mrisynth data prepare` with --split")

        spanning = patients_across_splits(records, group_trailing_letter=group_trailing_letter)
        vectors = normalised_thumbnails(np.asarray(cache.images))
        pairs = near_duplicate_pairs(records, vectors, threshold=threshold, group_trailing_letter=group_trailing_letter)
        nearest = nearest_train_correlation(records, vectors)

        by_pair = {f"{a}-{b}": sum(1 for p in pairs if {p["split_a"], p["split_b"]} == {a, b}) for a, b in _SPLIT_PAIRS}
        patients = {patient_key(r.patient_id, group_trailing_letter=group_trailing_letter)
                    for r in records if r.patient_id}
        report = {
            "images": len(records),
            "patients": len(patients),
            "patients_across_splits": len(spanning),
            "group_trailing_letter": group_trailing_letter,
            "threshold": threshold,
            "thumbnail_px": THUMB_SIZE,
            "near_duplicate_pairs": len(pairs),
            "near_duplicate_pairs_by_splits": by_pair,
            "near_duplicate_pairs_same_patient": sum(1 for p in pairs if p["same_patient"]),
            # For each held-out image: is there a training image this close? (what a classifier could memorise)
            "heldout_images_with_train_duplicate": {
                s: int((nearest[s] >= threshold).sum()) for s in ("val", "test") if s in nearest
            },
            "heldout_median_max_train_correlation": {
                s: round(float(np.median(nearest[s])), 4) for s in ("val", "test") if s in nearest and len(nearest[s])
            },
        }
        _save_patients_csv(spanning, out_dir / "patients_across_splits.csv")
        _save_pairs_csv(pairs, out_dir / "near_duplicates.csv")
        if pairs:
            save_pair_grid(pairs[:grid_pairs], out_dir / "worst_pairs.png")
        write_json(out_dir / "leakage.json", report)
        log.info("audit of %s: %d of %d patients span splits, %d near-duplicate pairs", data_dir, len(spanning),
                 len(patients), len(pairs))
        return report


def patients_across_splits(records: list[ImageRecord], *, group_trailing_letter: bool = False) -> list[dict]:
    """One row per patient with images in more than one split: patient_id, splits, images per split."""
    per_patient: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for rec in records:
        if rec.patient_id and rec.split in SPLITS:
            per_patient[patient_key(rec.patient_id, group_trailing_letter=group_trailing_letter)][rec.split] += 1
    rows = []
    for pid, counts in sorted(per_patient.items()):
        splits = [s for s in SPLITS if counts[s]]
        if len(splits) > 1:
            rows.append({"patient_id": pid, "splits": "+".join(splits), **{f"n_{s}": counts[s] for s in SPLITS}})
    return rows


def normalised_thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> (N, S*S) float32 rows with zero mean and unit norm (dot product = correlation)."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-6)  # a flat image gets correlation 0 with everything


def near_duplicate_pairs(
    records: list[ImageRecord], vectors: np.ndarray, *, threshold: float, group_trailing_letter: bool = False
) -> list[dict]:
    """Pairs of images in different splits whose thumbnail correlation is >= threshold, highest first.

    vectors: (N, D) rows from `normalised_thumbnails`, in the order of `records`.
    """
    index = _split_index(records)
    person = [patient_key(r.patient_id, group_trailing_letter=group_trailing_letter) for r in records]
    pairs = []
    for a, b in _SPLIT_PAIRS:
        ia, ib = index.get(a), index.get(b)
        if ia is None or ib is None:
            continue
        for start in range(0, len(ia), _CHUNK):
            rows = ia[start:start + _CHUNK]
            corr = vectors[rows] @ vectors[ib].T  # (chunk, n_b)
            for r, c in zip(*np.nonzero(corr >= threshold)):
                ra, rb = records[rows[r]], records[ib[c]]
                same = bool(ra.patient_id) and person[rows[r]] == person[ib[c]]
                pairs.append({
                    "id_a": ra.id, "split_a": a, "id_b": rb.id, "split_b": b,
                    "correlation": round(float(corr[r, c]), 5),
                    "same_patient": same,
                    "class_a": ra.class_name, "class_b": rb.class_name,
                    "path_a": ra.path, "path_b": rb.path,
                })
    pairs.sort(key=lambda p: -p["correlation"])
    return pairs


def nearest_train_correlation(records: list[ImageRecord], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """For val and test: each image's highest correlation with any training image."""
    index = _split_index(records)
    if "train" not in index:
        return {}
    train = vectors[index["train"]]
    out = {}
    for split in ("val", "test"):
        if split in index:
            rows = index[split]
            out[split] = np.concatenate([
                (vectors[rows[s:s + _CHUNK]] @ train.T).max(axis=1) for s in range(0, len(rows), _CHUNK)
            ])
    return out


def _split_index(records: list[ImageRecord]) -> dict[str, np.ndarray]:
    index: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec.split in SPLITS:
            index[rec.split].append(i)
    return {s: np.array(v, dtype=np.int64) for s, v in index.items()}


def _save_patients_csv(rows: list[dict], path: Path) -> None:
    columns = ["patient_id", "splits", *(f"n_{s}" for s in SPLITS)]
    write_csv(path, rows, columns=columns)


def _save_pairs_csv(pairs: list[dict], path: Path) -> None:
    columns = ["id_a", "split_a", "id_b", "split_b", "correlation", "same_patient", "class_a", "class_b"]
    write_csv(path, pairs, columns=columns)


def save_pair_grid(pairs: list[dict], path: Path) -> None:
    """A PNG with one row per pair: the two images side by side, titled with splits, ids and correlation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrisynth.data.images import read_grayscale, to_uint8

    fig, axes = plt.subplots(len(pairs), 2, figsize=(4, 2 * len(pairs)), squeeze=False)
    for row, pair in zip(axes, pairs):
        for ax, side in zip(row, ("a", "b")):
            ax.imshow(to_uint8(read_grayscale(pair[f"path_{side}"])), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{pair[f'split_{side}']} {pair[f'id_{side}']}", fontsize=7)
            ax.axis("off")
        row[0].text(-0.05, 0.5, f"r={pair['correlation']:.3f}", transform=row[0].transAxes, rotation=90,
                    va="center", ha="right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
