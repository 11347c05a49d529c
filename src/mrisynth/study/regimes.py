"""In which data regime do synthetic images help? The (real fraction x ratio) grid of differences from real-only
with their verdicts, the exchange rate in real images (study/exchange.py), and a plain headline."""

from __future__ import annotations

from mrisynth.study.exchange import exchange_rates
from mrisynth.study.names import BASELINE, RATIO, TEST
from mrisynth.study.stats import HELPS


def regime_grid(conditions: list[dict]) -> list[dict]:
    """One cell per ratio condition and fraction: Δ vs real-only at that fraction and its verdict."""
    cells = []
    for c in conditions:
        if c["kind"] != RATIO or c["condition"] == BASELINE:
            continue
        comp = c.get("comparison") or {}
        cells.append({"fraction": c["fraction"], "ratio": c["ratio"], "name": c["name"], "diff": comp.get("diff"),
                      "verdict": comp.get("verdict"), "train_real": c.get("train_real")})
    return cells


def regime_headline(cells: list[dict], fractions: list[float]) -> str:
    """Names the regimes (real fractions) where some ratio helps, or says plainly that none did."""
    helped = {}
    for cell in cells:
        if cell["verdict"] == HELPS:
            helped.setdefault(cell["fraction"], []).append(f"{cell['ratio']:g}x")
    if not cells:
        return "No ratio condition has been compared with real-only yet."
    where = "real fraction" if len(fractions) > 1 else "the real training set"
    if not helped:
        return (f"Synthetic images helped in no regime tested ({', '.join(f'{f:g}' for f in fractions)} of the "
                "real training patients): no ratio was detectably better than real-only.") if len(fractions) > 1 \
            else "Synthetic images did not detectably help at any ratio."
    parts = [f"{f:g} ({', '.join(r)})" for f, r in sorted(helped.items())]
    return f"Synthetic images helped at {where} {'; '.join(parts)}" + (
        f"; at no other of {', '.join(f'{f:g}' for f in fractions)}." if len(fractions) > 1 else ".")


def regime_summary(conditions: list[dict], trials: list[dict], *, n_boot: int) -> dict:
    """The grid, the exchange rates (with two or more real fractions) and the headline, for summary.json."""
    fractions = sorted({c["fraction"] for c in conditions}, reverse=True)
    cells = regime_grid(conditions)
    runs = [{"fraction": t["fraction"], "condition": t["condition"], "kind": t["kind"],
             "seed": (t["seed"], t["fold"]), "train_real": t["result"].get("train_real"),
             "test_accuracy": (t["result"].get(TEST) or {}).get("accuracy")} for t in trials]
    return {"fractions": fractions, "grid": cells, "headline": regime_headline(cells, fractions),
            "exchange": exchange_rates(runs, n_boot=n_boot) if len(fractions) > 1 else []}
