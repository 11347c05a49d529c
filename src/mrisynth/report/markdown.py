"""report.md, and the verdict table shared by the Markdown, the HTML and the terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mrisynth.study.names import BASELINE
from mrisynth.study.stats import NO_DIFFERENCE


def fmt(x: float | None, *, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f}" if pct else f"{x:.3g}"


def fmt_ci(stat: dict) -> str:
    """'94.81 [93.10, 96.20]' (percent); the interval is left out when there is a single run."""
    if not stat or stat.get("n", 0) == 0:
        return "–"
    if math.isnan(stat.get("lo", math.nan)):
        return fmt(stat["mean"])
    return f"{fmt(stat['mean'])} [{fmt(stat['lo'])}, {fmt(stat['hi'])}]"


VERDICT_HEADER = ("condition", "synthetic", "runs", "val acc %", "test acc % (95% CI)", "test F1 %",
                  "Δ vs real-only (pts, CI at Holm level)", "p (Holm)", "verdict")


def verdict_rows(summary: dict) -> list[tuple[str, ...]]:
    """One row per condition: what it trained on, its scores, and its comparison with real-only."""
    rows = []
    for c in summary["conditions"]:
        comp = c.get("comparison") or {}
        delta, p, verdict = comparison_cells(comp)
        if not comp:
            verdict = "baseline" if c["name"] == BASELINE else ("not run" if not c["n_trials"] else "–")
        rows.append((c["name"], str(c.get("train_synthetic") if c.get("train_synthetic") is not None else "–"),
                     str(c["n_trials"]), fmt_ci(c["val_accuracy"]), fmt_ci(c["test_accuracy"]),
                     fmt_ci(c["test_f1_macro"]), delta, p, verdict))
    return rows


def comparison_cells(comp: dict) -> tuple[str, str, str]:
    """(Δ with its interval, Holm p, verdict) as text. "No detectable difference" carries the minimum
    detectable difference (80% power), so "no effect" and "this study could not tell" read differently."""
    if not comp:
        return "–", "–", "–"
    if "lo" in comp:
        delta = f"{100 * comp['diff']:+.2f} [{100 * comp['lo']:+.2f}, {100 * comp['hi']:+.2f}]"
    else:
        delta = "–" if comp.get("diff") is None else f"{100 * comp['diff']:+.2f}"
    p = f"{comp['p_holm']:.3g}" if comp.get("p_holm") is not None else "–"
    verdict = comp["verdict"]
    if verdict == NO_DIFFERENCE and comp.get("mdd") is not None:
        mdd = 100 * comp["mdd"]
        # Accuracy cannot move by 100 points or more: then no possible effect was detectable.
        verdict += (f" (could detect ±{mdd:.1f} pts)" if mdd < 100 else
                    f" (could detect no possible difference: ±{mdd:.0f} pts needed; add runs or test patients)")
    elif comp.get("reason"):
        verdict += f": {comp['reason']}"
    return delta, p, verdict


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def best_sentence(summary: dict) -> str:
    best = summary.get("best")
    if not best:
        return "No finished ratio condition yet."
    diff = best.get("diff_vs_real_only")
    delta = "" if diff is None else f" ({100 * diff:+.2f} points vs real-only, verdict: {best['verdict']})"
    if diff is None and best.get("verdict") not in (None, "baseline"):
        delta = f" (verdict: {best['verdict']})"
    if best.get("per_fold"):  # cross-validation: chosen per fold on its validation fold, scored on its test fold
        chosen = ", ".join(f"fold {f['fold']}: {f['condition']}" for f in best["per_fold"])
        return (f"Best ratio chosen in each fold on its validation fold ({chosen}); test accuracy of those "
                f"choices on their own test folds (mean over folds): {fmt_ci(best['test_accuracy'])}%{delta}.")
    return (f"Best ratio on validation: {best['condition']} (validation accuracy {fmt_ci(best['val_accuracy'])}%); "
            f"its test accuracy: {fmt_ci(best['test_accuracy'])}%{delta}.")


def build_markdown(summary: dict, *, title: str, figures: dict[str, str], sections: Sequence[tuple] = ()) -> str:
    """The whole report as Markdown; `figures` maps captions to relative PNG paths; `sections` are extra
    (heading, sentence, header, rows) blocks shown after the verdicts (report/regimes.py)."""
    def md_row(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(values) + " |"

    lines = [f"# {title}", "", best_sentence(summary), "",
             f"Trials finished: {summary['n_trials_done']} of {summary['n_trials_total']}. "
             f"Seeds: {', '.join(map(str, summary['seeds']))}."
             + (f" Patient-wise {summary['folds']}-fold cross-validation." if summary["folds"] else ""), "",
             "## Verdicts", "", md_row(VERDICT_HEADER), md_row(tuple("---" for _ in VERDICT_HEADER))]
    lines += [md_row(r) for r in verdict_rows(summary)]
    for heading, sentence, header, rows in sections:
        lines += ["", f"## {heading}", "", sentence, ""]
        if rows:
            lines += [md_row(header), md_row(tuple("---" for _ in header))] + [md_row(r) for r in rows]
    lines += ["", "## Protocol caveats", ""] + [f"- {c}" for c in summary["caveats"]]
    if summary.get("leakage"):
        lines += ["", "## Leakage audit (data/audit/leakage.json)", ""]
        lines += [f"- {k}: {v}" for k, v in scalars(summary["leakage"]).items()]
    if summary.get("audit"):
        lines += ["", "## Synthetic-image audit (quality/quality.json)", "", md_row(AUDIT_HEADER),
                  md_row(tuple("---" for _ in AUDIT_HEADER))]
        lines += [md_row(r) for r in audit_rows(summary)]
    lines += ["", "## Figures", ""] + [f"![{caption}]({path})" for caption, path in figures.items()]
    return "\n".join(lines) + "\n"


AUDIT_HEADER = ("measure", "synthetic", "real reference")


def audit_rows(summary: dict) -> list[tuple[str, ...]]:
    """The audit headline rows as text (real reference: the same measure between real images)."""
    return [(m, fmt(s, pct=False), fmt(r, pct=False)) for m, s, r in summary.get("audit") or []]


def scalars(data: dict) -> dict:
    """The top-level numbers, strings and flags of a dict (nested values left out), for a short listing."""
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool))}
