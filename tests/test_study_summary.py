"""summary.compare's test of record across seeds, and the best ratio chosen per fold under cross-validation."""

from __future__ import annotations

import numpy as np
import pytest

from mrisynth.files import write_csv
from mrisynth.report.markdown import best_sentence
from mrisynth.study import summary


def _trial(condition: str, seed: int, correct: np.ndarray, *, fold: int = -1, val: float = 0.5) -> dict:
    ids = [f"img{i:03d}" for i in range(len(correct))]
    return {"condition": condition, "seed": seed, "fold": fold, "test_correct": dict(zip(ids, map(bool, correct))),
            "result": {"val": {"accuracy": val}, "test": {"accuracy": float(np.mean(correct))}}}


def test_more_seeds_with_identical_predictions_do_not_make_the_verdict_more_confident():
    base = np.arange(200) % 10 < 7
    better = base.copy()
    better[np.flatnonzero(~base)[:10]] = True  # 10 fixes, 4 new errors
    better[np.flatnonzero(base)[:4]] = False
    one = summary.compare([_trial("r0", 0, base)], [_trial("r1", 0, better)], n_boot=2000, seed=7)
    five = summary.compare([_trial("r0", s, base) for s in range(5)], [_trial("r1", s, better) for s in range(5)],
                           n_boot=2000, seed=7)
    assert five["n_seeds"] == 5 and five["diff"] == pytest.approx(one["diff"])
    assert five["p"] >= one["p"] - 1e-12 and one["p"] > 0.05  # summed McNemar gave p=0.0005 for five
    assert [m["seed"] for m in five["mcnemar_per_seed"]] == list(range(5))  # secondary, one per seed
    assert all(m["p"] == pytest.approx(one["mcnemar_per_seed"][0]["p"]) for m in five["mcnemar_per_seed"])


def test_with_folds_the_best_ratio_is_chosen_and_scored_per_fold():
    n = 20
    # fold 0: r1 best on validation; fold 1: r2 best on validation. Pooled over folds, r2 would win.
    val = {(0, "r0"): 0.5, (0, "r1"): 0.8, (0, "r2"): 0.7, (1, "r0"): 0.5, (1, "r1"): 0.6, (1, "r2"): 0.95}
    test = {(0, "r0"): 10, (0, "r1"): 14, (0, "r2"): 19, (1, "r0"): 10, (1, "r1"): 11, (1, "r2"): 12}
    trials = [_trial(c, 0, np.arange(n) < test[(f, c)], fold=f, val=val[(f, c)]) for (f, c) in val]
    conditions = [{"name": c, "kind": "ratio", "ratio": r, "n_trials": 2} for c, r in (("r0", 0), ("r1", 1), ("r2", 2))]
    best = summary.choose_best(conditions, trials)
    assert [(f["fold"], f["condition"]) for f in best["per_fold"]] == [(0, "r1"), (1, "r2")]
    # Each fold's choice scored on its own test fold only: (14 + 12) / 2 / 20, not r2's pooled 31 / 40.
    assert best["test_accuracy"]["mean"] == pytest.approx(0.65)
    assert best["diff_vs_real_only"] == pytest.approx(0.15)
    assert best["verdict"] == "the choice differs across folds"
    assert "fold 0: r1" in best_sentence({"best": best})


def test_results_csv_has_every_column_any_trial_has(tmp_path):
    rows = [{"trial": "a", "seed": 0}, {"trial": "b", "seed": 1, "test_accuracy_lo": 0.5}]
    text = write_csv(tmp_path / "results.csv", rows).read_text()
    assert text.splitlines()[0] == "trial,seed,test_accuracy_lo"
    assert text.splitlines()[2] == "b,1,0.5"


def test_audit_warnings_flag_a_far_or_copying_synthetic_set(tmp_path):
    import json

    from mrisynth.study.summary import audit_warnings

    path = tmp_path / "quality.json"
    path.write_text(json.dumps({
        "feature_spaces": {"stats": {"overall": {"precision": 0.0}, "real_vs_real": {"overall": {"precision": 0.94}}}},
        "memorisation": {"patients_reproduced": ["P1"]},
    }))
    notes = audit_warnings(path)
    assert len(notes) == 2 and "far from the real ones" in notes[0] and "1 training patient" in notes[1]
    path.write_text(json.dumps({
        "feature_spaces": {"stats": {"overall": {"precision": 0.9}, "real_vs_real": {"overall": {"precision": 0.94}}}},
        "memorisation": {"patients_reproduced": []},
    }))
    assert audit_warnings(path) == []
    assert audit_warnings(tmp_path / "missing.json") == []
