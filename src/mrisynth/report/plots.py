"""The report's figures, each returned as PNG bytes (the HTML embeds them; report/figures/ keeps copies).

Every function takes plain data (the summary dict, trial folders, manifests) and draws one figure.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are written to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mrisynth.data.images import fit_square, read_grayscale  # noqa: E402
from mrisynth.data.manifest import ImageRecord  # noqa: E402
from mrisynth.files import read_jsonl  # noqa: E402
from mrisynth.study.names import RATIO  # noqa: E402


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _ladder(summary: dict) -> list[dict]:
    """The ratio ladder at the largest real fraction (the others are in the regime figures)."""
    top = max((c.get("fraction", 1.0) for c in summary["conditions"]), default=1.0)
    return [c for c in summary["conditions"] if c["kind"] == RATIO and c["n_trials"]
            and c.get("fraction", 1.0) == top]


def _ratio_axis(ax: plt.Axes, ratios: Sequence[float]) -> list[int]:
    """Ratios on evenly spaced positions (0.25 and 5 both readable), labelled 1:r."""
    positions = list(range(len(ratios)))
    ax.set_xticks(positions, [f"1:{r:g}" for r in ratios])
    ax.set_xlabel("real : synthetic")
    return positions


def plot_metric_vs_ratio(summary: dict) -> bytes:
    """Test accuracy and macro F1 (mean and 95% CI across seeds), validation accuracy, by ratio."""
    ladder = _ladder(summary)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = _ratio_axis(ax, [c["ratio"] for c in ladder])
    for key, label, colour in (("test_accuracy", "test accuracy", "C0"), ("test_f1_macro", "test macro F1", "C1"),
                               ("val_accuracy", "validation accuracy", "C2")):
        mean = np.array([c[key]["mean"] for c in ladder], dtype=float)
        lo = np.array([c[key]["lo"] for c in ladder], dtype=float)
        hi = np.array([c[key]["hi"] for c in ladder], dtype=float)
        ax.plot(x, mean, marker="o", color=colour, label=label, linestyle="--" if key.startswith("val") else "-")
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2)
    if ladder:
        ax.axhline(ladder[0]["test_accuracy"]["mean"], color="grey", linewidth=0.8, linestyle=":",
                   label="real-only test accuracy")
    ax.set_ylabel("score")
    ax.set_title("Metric vs synthetic ratio (bands: 95% CI across seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the bands stay visible
    return _png(fig)


def plot_recall_vs_ratio(summary: dict) -> bytes:
    """Per-class test recall (mean over seeds) by ratio."""
    ladder = _ladder(summary)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = _ratio_axis(ax, [c["ratio"] for c in ladder])
    classes = sorted({cls for c in ladder for cls in c["test_recall"]})
    for cls in classes:
        ax.plot(x, [c["test_recall"].get(cls, math.nan) for c in ladder], marker="o", label=cls)
    ax.set_ylabel("test recall")
    ax.set_title("Per-class recall vs synthetic ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def plot_confusions(matrices: dict[str, np.ndarray], classes: Sequence[str]) -> bytes:
    """Confusion matrices (rows: true class, columns: predicted; summed over seeds), side by side."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.4), squeeze=False)
    for ax, (title, m) in zip(axes[0], matrices.items()):
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(int(v)), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=30, fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def read_curves(metrics_jsonl: Path) -> dict[str, list[tuple[float, float]]]:
    """{metric: [(epoch, value)]} for the loss/accuracy series a classifier logged per epoch."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for i, record in enumerate(read_jsonl(metrics_jsonl)):  # a missing file is no records
        epoch = record.get("epoch", i)
        for key, value in _flatten(record).items():
            if _is_curve(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(key, []).append((float(epoch), float(value)))
    return curves


def read_generator_validation(metrics_jsonl: Path) -> dict[str, list[tuple[float, float]]]:
    """{val_* metric: [(step, value)]} from a generator's metrics.jsonl (only records with a step and val_*
    keys: loss lines are left out); empty when the generator logged no validation."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for record in read_jsonl(metrics_jsonl):
        if not isinstance(record.get("step"), (int, float)):
            continue
        for key, value in record.items():
            if key.startswith("val_") and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(key, []).append((float(record["step"]), float(value)))
    return curves


def plot_generator_validation(curves_by_generator: dict[str, dict[str, list[tuple[float, float]]]]) -> bytes:
    """One panel per validation metric (FD, KID, TSTR accuracy... have different scales), one line per
    generator (one per fold under cross-validation), against training step."""
    keys = sorted({k for curves in curves_by_generator.values() for k in curves})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for n, (name, curves) in enumerate(curves_by_generator.items()):
            if key in curves:
                xs, ys = zip(*sorted(curves[key]))
                ax.plot(xs, ys, marker="o", color=f"C{n}", label=name)
        ax.set_xlabel("generator step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if len(curves_by_generator) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _is_curve(key: str) -> bool:
    """Loss and accuracy series ("train_loss", "val_acc", "val_accuracy"...), not timings or learning rates."""
    return key.endswith(("loss", "acc", "accuracy"))


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def plot_training_curves(curves_by_trial: dict[str, dict[str, list[tuple[float, float]]]]) -> bytes:
    """Loss (left) and accuracy (right) per epoch for a few trials."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
    for n, (trial, curves) in enumerate(curves_by_trial.items()):
        for key, points in curves.items():
            ax = ax_loss if "loss" in key else ax_acc
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=f"C{n}", linestyle="-" if key.startswith("train") else "--",
                    label=f"{trial}: {key}", marker="." if len(xs) < 30 else None)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def plot_sample_grid(real: dict[str, list[ImageRecord]], synthetic: dict[str, list[ImageRecord]],
                     *, per_row: int = 6, size: int = 64) -> bytes:
    """Per class: a row of real training images, then a row of synthetic ones."""
    classes = sorted(set(real) | set(synthetic))
    rows = [(cls, kind, recs) for cls in classes for kind, recs in (("real", real.get(cls, [])),
                                                                     ("synthetic", synthetic.get(cls, [])))]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 1.2, len(rows) * 1.25), squeeze=False)
    for r, (cls, kind, recs) in enumerate(rows):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(recs):
                ax.imshow(fit_square(read_grayscale(recs[c].path), size), cmap="gray", vmin=0, vmax=255)
        axes[r][0].text(-0.1, 0.5, f"{cls}\n{kind}", transform=axes[r][0].transAxes, ha="right", va="center",
                        fontsize=8)
    fig.suptitle("Real (train split) vs synthetic, per class", fontsize=10)
    return _png(fig)
