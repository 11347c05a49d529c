"""The report's sections on data regimes and on external sets: the (real fraction x ratio) heatmap, accuracy
against real training images, the exchange rate, and each external set's verdicts. Markdown and HTML both draw
these from `sections(summary)`, so the two cannot disagree."""

from __future__ import annotations

import math

import numpy as np

from mrisynth.report.markdown import comparison_cells, fmt_ci
from mrisynth.report.plots import _png, plt
from mrisynth.study.names import BASELINE, RATIO
from mrisynth.study.stats import HELPS, HURTS

EXCHANGE_HEADER = ("condition", "real images", "worth in real images (95% interval over runs)", "runs")
EXTERNAL_HEADER = ("condition", "runs", "external acc %", "Δ vs real-only (pts, CI at Holm level)", "p (Holm)",
                   "verdict")


def sections(summary: dict) -> list[tuple[str, str, tuple[str, ...], list[tuple[str, ...]]]]:
    """(title, sentence, table header, table rows) of each regime and external-set section that has data."""
    out = []
    regimes = summary.get("regimes") or {}
    if len(regimes.get("fractions", [])) > 1:
        out.append(("Data regimes: real fraction x ratio", regimes["headline"], EXCHANGE_HEADER,
                    exchange_rows(regimes.get("exchange") or [])))
    for name, block in (summary.get("external") or {}).items():
        out.append((f"External set: {name}", external_sentence(name, block), EXTERNAL_HEADER, external_rows(block)))
    return out


def exchange_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        if r["worth_real_images"] is None:
            worth = {"above": "more than all the real images measured", "below": "less than the smallest fraction"
                     }.get(r["beyond"], "–")
        else:
            interval = "" if r["lo"] is None else f" [{r['lo']:+.0f}, {r['hi']:+.0f}]"
            worth = f"{r['worth_real_images']:+.0f}{interval}"
        out.append((f"{r['condition']} at {r['fraction']:g} real", str(r["real_images"]), worth, str(r["n_runs"])))
    return out


def external_rows(block: dict) -> list[tuple[str, ...]]:
    rows = []
    for c in block["conditions"]:
        delta, p, verdict = comparison_cells(c.get("comparison") or {})
        if not c.get("comparison"):
            verdict = "baseline" if c["name"] == BASELINE else verdict
        rows.append((c["name"], str(c["n_trials"]), fmt_ci(c["accuracy"]), delta, p, verdict))
    return rows


def external_sentence(name: str, block: dict) -> str:
    best = block.get("best")
    if not best:
        return f"No ratio condition has been scored on {name} yet."
    diff = best.get("diff_vs_real_only")
    delta = "" if diff is None else f", {100 * diff:+.2f} points vs real-only ({best.get('verdict')})"
    return (f"On {name}, the ratio chosen on internal validation ({best['condition']}) scores "
            f"{fmt_ci(best['accuracy'])}%{delta}.")


def plot_regime_heatmap(summary: dict) -> bytes:
    """Δ test accuracy vs real-only (points) for each real fraction (rows) and ratio (columns), verdict marked:
    + helps, − hurts, blank no detectable difference."""
    cells = (summary.get("regimes") or {}).get("grid") or []
    fractions = sorted({c["fraction"] for c in cells}, reverse=True)
    ratios = sorted({c["ratio"] for c in cells})
    grid = np.full((len(fractions), len(ratios)), np.nan)
    fig, ax = plt.subplots(figsize=(1.1 * len(ratios) + 2.5, 0.7 * len(fractions) + 1.8))
    for c in cells:
        i, j = fractions.index(c["fraction"]), ratios.index(c["ratio"])
        if c["diff"] is not None and not math.isnan(c["diff"]):
            grid[i, j] = 100 * c["diff"]
            mark = {HELPS: " +", HURTS: " −"}.get(c["verdict"], "")
            ax.text(j, i, f"{grid[i, j]:+.1f}{mark}", ha="center", va="center", fontsize=8)
    bound = max(1.0, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(ratios)), [f"1:{r:g}" for r in ratios])
    ax.set_yticks(range(len(fractions)), [f"{f:g}" for f in fractions])
    ax.set_xlabel("real : synthetic")
    ax.set_ylabel("share of real training patients")
    fig.colorbar(image, ax=ax, label="Δ test accuracy vs real-only (points)")
    ax.set_title("Where synthetic images help (+ helps, − hurts, Holm-corrected)")
    return _png(fig)


def plot_accuracy_vs_real(summary: dict) -> bytes:
    """Test accuracy (mean, 95% CI over runs) against real training images, one curve per ratio."""
    ladder = [c for c in summary["conditions"] if c["kind"] == RATIO and c["n_trials"] and c.get("train_real")]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for ratio in sorted({c["ratio"] for c in ladder}):
        points = sorted((c["train_real"], c["test_accuracy"]) for c in ladder if c["ratio"] == ratio)
        x = [n for n, _ in points]
        mean = np.array([100 * a["mean"] for _, a in points])
        lo = np.array([100 * a["lo"] if not math.isnan(a["lo"]) else 100 * a["mean"] for _, a in points])
        hi = np.array([100 * a["hi"] if not math.isnan(a["hi"]) else 100 * a["mean"] for _, a in points])
        style = {"color": "black", "linewidth": 2.2} if ratio == 0 else {}
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=3,
                    label="real only" if ratio == 0 else f"1:{ratio:g}", **style)
    ax.set_xscale("log")
    ax.set_xlabel("real training images (log scale)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=8, title="real : synthetic")
    ax.set_title("Accuracy against real training images")
    return _png(fig)
