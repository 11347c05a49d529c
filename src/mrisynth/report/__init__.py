"""The study report: RUN/report/{index.html, report.md, results.csv, summary.json, figures/*.png}.

    run_report(run_dir) -> Path      merges whatever trials are done (re-run it any time)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mrisynth.data.manifest import load_classes, load_manifest, select
from mrisynth.files import atomic_path, write_csv, write_json, write_text
from mrisynth.report import plots, regimes
from mrisynth.report.html import build_html
from mrisynth.report.markdown import build_markdown
from mrisynth.study.names import BASELINE, RATIO, TEST

log = logging.getLogger(__name__)

TITLE = "mrisynth study: does synthetic data help, and at what ratio?"


def run_report(run_dir: str | os.PathLike) -> Path:
    """Write RUN/report/ from the finished trials (replacing any earlier report atomically); returns its path."""
    from mrisynth.study.runner import load_run_config
    from mrisynth.study.summary import load_trial_results, results_rows, summarize

    run = Path(run_dir)
    cfg = load_run_config(run)
    trials = load_trial_results(run, cfg)
    summary = summarize(run, cfg, trials)
    rows = results_rows(trials, n_boot=cfg.bootstrap)
    figures = build_figures(run, summary, trials)
    out = run / "report"
    with atomic_path(out, suffix="") as tmp:
        (tmp / "figures").mkdir(parents=True)
        names = {}
        for i, (caption, png) in enumerate(figures.items()):
            name = f"figures/{i + 1:02d}-{caption.split(':')[0].lower().replace(' ', '-')}.png"
            (tmp / name).write_bytes(png)
            names[caption] = name
        write_json(tmp / "summary.json", summary)
        write_csv(tmp / "results.csv", rows, columns=None if rows else ["trial"])
        extra = regimes.sections(summary)
        write_text(tmp / "report.md", build_markdown(summary, title=TITLE, figures=names, sections=extra))
        write_text(tmp / "index.html", build_html(summary, title=TITLE, figures=figures, sections=extra))
    log.info("report written to %s", out / "index.html")
    return out


def build_figures(run: Path, summary: dict, trials: list[dict]) -> dict[str, bytes]:
    """Caption -> PNG for every figure the finished trials allow (a figure without data is left out).

    The generator's validation curves (RUN/generator[/fold-k]/metrics.jsonl, val_* records) appear when the
    generator logged any."""
    figures: dict[str, bytes] = {}
    if any(c["kind"] == RATIO and c["n_trials"] for c in summary["conditions"]):
        figures["Metric vs ratio: test accuracy, macro F1 and validation accuracy"] = plots.plot_metric_vs_ratio(summary)
        figures["Per-class recall vs ratio"] = plots.plot_recall_vs_ratio(summary)
    if len((summary.get("regimes") or {}).get("fractions", [])) > 1:
        figures["Regimes: Δ vs real-only by real fraction and ratio"] = regimes.plot_regime_heatmap(summary)
        figures["Real images: test accuracy against real training images, per ratio"] = \
            regimes.plot_accuracy_vs_real(summary)
    best = (summary.get("best") or {}).get("condition")
    top = (summary.get("best") or {}).get("fraction", 1.0)
    trials = [t for t in trials if t.get("fraction", 1.0) == top]  # the figures below show the headline fraction
    shown = [BASELINE] + ([best] if best and best != BASELINE else [])
    data_dir = _real_data_dir(run)
    classes = load_classes(data_dir) if data_dir else []
    matrices = {}
    for name in shown:
        ms = [np.asarray(t["result"][TEST]["confusion"]) for t in trials
              if t["condition"] == name and (t["result"].get(TEST) or {}).get("confusion") is not None]
        if ms:
            matrices[f"{name} (test, summed over {len(ms)} run(s))"] = np.sum(ms, axis=0)
    if matrices and classes:
        figures["Confusion matrices: real-only vs the best ratio"] = plots.plot_confusions(matrices, classes)
    curves = {}
    for name in shown:
        first = next((t for t in trials if t["condition"] == name), None)
        if first:
            c = plots.read_curves(Path(first["dir"]) / "metrics.jsonl")
            if c:
                curves[first["trial"]] = c
    if curves:
        figures["Training curves: real-only and the best ratio (first seed)"] = plots.plot_training_curves(curves)
    generators = {d.name: plots.read_generator_validation(d / "metrics.jsonl")
                  for d in [run / "generator", *sorted((run / "generator").glob("fold-*"))]}
    generators = {name: curves for name, curves in generators.items() if curves}
    if generators:
        figures["Generator validation: val_* metrics against training step"] = plots.plot_generator_validation(
            generators)
    grid = _sample_grid(run, data_dir)
    if grid:
        figures["Sample grid: real vs synthetic per class"] = grid
    return figures


def _real_data_dir(run: Path) -> Path | None:
    from mrisynth.study.summary import run_data_dir

    return run_data_dir(run)


def _sample_grid(run: Path, data_dir: Path | None, *, per_row: int = 6) -> bytes | None:
    pool = run / "synthetic"
    if not (pool / "manifest.csv").is_file():
        folds = sorted(pool.glob("fold-*/manifest.csv"))
        pool = folds[0].parent if folds else pool
    if data_dir is None or not (pool / "manifest.csv").is_file():
        return None
    real = select(load_manifest(data_dir), split="train")
    syn = load_manifest(pool)
    rng = np.random.default_rng(0)

    def pick(records: list) -> dict[str, list]:
        out = {}
        for cls in sorted({r.class_name for r in records}):
            group = [r for r in records if r.class_name == cls]
            out[cls] = [group[i] for i in sorted(rng.choice(len(group), min(per_row, len(group)), replace=False))]
        return out

    return plots.plot_sample_grid(pick(real), pick(syn), per_row=per_row)
