"""Comparisons with real-only (sign, Holm, incomplete and missing baselines), and the best ratio chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest

from mrisynth.files import read_json, write_csv
from mrisynth.report import run_report
from mrisynth.report.markdown import best_sentence, verdict_rows
from mrisynth.study import run_study, summary
from mrisynth.study.comparisons import apply_holm, compare
from test_study_runner import install_fakes, small_config


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


def _trial(condition: str, seed: int, correct: np.ndarray, *, fold: int = -1, val: float = 0.5,
           missing: str | None = None) -> dict:
    ids = [f"img{i:03d}" for i in range(len(correct))]
    return {"trial": f"{condition}-s{seed}", "condition": condition, "seed": seed, "fold": fold,
            "test_correct": {} if missing else dict(zip(ids, map(bool, correct))), "missing": missing,
            "result": {"val": {"accuracy": val}, "test": {"accuracy": float(np.mean(correct))}}}


def _patients(n: int, per_patient: int) -> dict[str, str]:
    return {f"img{i:03d}": f"P{i // per_patient}" for i in range(n)}


def _entry(name: str, comparison: dict) -> dict:
    return {"name": name, "kind": "ratio", "n_trials": 4, "comparison": comparison}


def test_repeating_identical_seeds_does_not_make_the_verdict_more_confident():
    base = np.arange(200) % 10 < 7
    better = base.copy()
    better[np.flatnonzero(~base)[:10]] = True  # 10 fixes, 4 new errors
    better[np.flatnonzero(base)[:4]] = False
    two = compare([_trial("r0", s, base) for s in range(2)], [_trial("r1", s, better) for s in range(2)],
                  n_boot=500, seed=7)
    five = compare([_trial("r0", s, base) for s in range(5)], [_trial("r1", s, better) for s in range(5)],
                   n_boot=500, seed=7)
    assert five["n_runs"] == 5 and five["diff"] == pytest.approx(two["diff"]) == pytest.approx(0.03)
    assert five["p"] == pytest.approx(two["p"]) and two["p"] > 0.05  # copies add no evidence
    assert [m["seed"] for m in five["secondary"]["mcnemar_per_seed"]] == list(range(5))  # secondary, per seed
    assert five["cluster_unit"] == "image (no patient IDs)"


def test_a_better_condition_helps_with_a_positive_delta_and_a_worse_one_hurts():
    rng = np.random.default_rng(0)
    n, patients = 120, _patients(120, 6)
    base = [rng.random(n) < 0.7 for _ in range(4)]
    better = [b | (rng.random(n) < 0.6) for b in base]  # each run fixes most of its errors
    worse = [b & (rng.random(n) < 0.6) for b in base]
    baseline = [_trial("r0", s, base[s]) for s in range(4)]
    conditions = [_entry("r1", compare(baseline, [_trial("r1", s, better[s]) for s in range(4)], n_boot=200,
                                       seed=1, patient_of=patients)),
                  _entry("r2", compare(baseline, [_trial("r2", s, worse[s]) for s in range(4)], n_boot=200,
                                       seed=1, patient_of=patients))]
    apply_holm(conditions, alpha=0.05)
    up, down = conditions[0]["comparison"], conditions[1]["comparison"]
    assert up["cluster_unit"] == "patient" and up["n_clusters"] == 20 and up["n_runs"] == 4
    assert up["verdict"] == "helps" and up["diff"] > 0.15 and 0 < up["lo"] < up["diff"] < up["hi"]
    assert down["verdict"] == "hurts" and down["diff"] < -0.15 and down["hi"] < 0


def test_verdicts_and_intervals_use_the_holm_corrected_p():
    from scipy import stats as sstats

    def comparison(p: float) -> dict:  # diff 0.05 on 10 df with the standard error that gives this p
        return {"diff": 0.05, "se": 0.05 / float(sstats.t.isf(p / 2, 10)), "df": 10.0, "p": p}

    three = [_entry("r1", comparison(0.02)), _entry("r2", comparison(0.5)), _entry("r3", comparison(0.6))]
    apply_holm(three, alpha=0.05)
    first = three[0]["comparison"]
    assert first["p_holm"] == pytest.approx(0.06) and first["verdict"] == "no detectable difference"
    assert first["lo"] < 0 < first["hi"]  # never an interval excluding 0 beside "no detectable difference"
    assert first["mdd"] > 0.05  # and what this study could have detected, at alpha / 3
    alone = [_entry("r1", comparison(0.02))]
    apply_holm(alone, alpha=0.05)
    assert alone[0]["comparison"]["verdict"] == "helps" and alone[0]["comparison"]["lo"] > 0


def test_a_trial_without_predictions_makes_its_condition_incomplete_not_a_verdict():
    base = np.arange(30) % 3 > 0
    baseline = [_trial("r0", s, base) for s in range(3)]
    group = [_trial("r1", 0, base), _trial("r1", 1, base, missing="no test rows"), _trial("r1", 2, base)]
    comparison = compare(baseline, group, n_boot=200, seed=0)
    assert comparison == {"verdict": "incomplete", "reason": "no test predictions (predictions.csv) for r1-s1"}
    conditions = [_entry("r1", comparison)]
    apply_holm(conditions, alpha=0.05)
    assert conditions[0]["comparison"]["verdict"] == "incomplete" and "p_holm" not in conditions[0]["comparison"]


def test_without_a_baseline_the_comparison_says_so():
    group = [_trial("r1", s, np.ones(10, bool)) for s in range(2)]
    comparison = compare([], group, n_boot=200, seed=0)
    assert comparison["verdict"] == "not compared" and "r0" in comparison["reason"]


def test_one_run_per_condition_is_not_testable_and_keeps_its_secondary_figures():
    base = np.arange(40) % 4 > 0
    comparison = compare([_trial("r0", 0, base)], [_trial("r1", 0, np.ones(40, bool))], n_boot=200, seed=0)
    assert comparison["verdict"] == "not testable" and comparison["p"] is None
    assert comparison["diff"] == pytest.approx(0.25) and comparison["secondary"]["mcnemar_per_seed"][0]["only_b"] == 10


def test_the_best_ratio_is_chosen_on_validation_not_test():
    def entry(name: str, ratio: float, val: float, test: float) -> dict:
        return {"name": name, "kind": "ratio", "ratio": ratio, "n_trials": 2,
                "val_accuracy": {"mean": val}, "test_accuracy": {"mean": test}}

    conditions = [entry("r0", 0, 0.70, 0.70), entry("r1", 1, 0.80, 0.72), entry("r2", 2, 0.75, 0.90),
                  {"name": "augment-only-r1", "kind": "augment-only", "ratio": 1, "n_trials": 2,
                   "val_accuracy": {"mean": 0.99}, "test_accuracy": {"mean": 0.99}}]
    best = summary.choose_best(conditions)
    assert best["condition"] == "r1" and best["test_accuracy"] == {"mean": 0.72}
    assert best["verdict"] == "not compared"  # r1 has no comparison here: the headline does not invent one


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


def test_a_full_run_clusters_by_patient_and_warns_about_power(tiny_manifest_dir, tmp_path, fakes):
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir), run, report=run_report)
    result = read_json(run / "report" / "summary.json")
    comparison = {c["name"]: c.get("comparison") for c in result["conditions"]}["r1"]
    assert comparison["cluster_unit"] == "patient" and comparison["n_clusters"] == 3  # 9 test slices, 3 patients
    assert comparison["n_runs"] == 2 and comparison["n_images"] == 9
    assert any("only 3 patients" in c for c in result["caveats"])
    assert any("Fewer than 3 runs per condition (fewest: 2)" in c for c in result["caveats"])


def test_a_finished_trial_without_predictions_is_reported_incomplete(tiny_manifest_dir, tmp_path, fakes):
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir), run)
    (run / "trials" / "r1-s0" / "predictions.csv").unlink()
    result = read_json(run_report(run) / "summary.json")
    verdicts = {c["name"]: (c.get("comparison") or {}).get("verdict") for c in result["conditions"]}
    assert verdicts["r1"] == "incomplete" and verdicts["r0.5"] != "incomplete"
    assert result["incomplete"] == [{"trial": "r1-s0", "reason": "no test rows in predictions.csv (missing or empty)"}]
    assert any("r1-s0" in c and "rerun" in c for c in result["caveats"])
    row = next(r for r in verdict_rows(result) if r[0] == "r1")
    assert row[-1].startswith("incomplete")


def test_a_study_without_a_finished_baseline_says_no_comparison_was_made(tiny_manifest_dir, tmp_path, fakes):
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir), run)
    for seed in (0, 1):
        (run / "trials" / f"r0-s{seed}" / "result.json").unlink()
    result = read_json(run_report(run) / "summary.json")
    verdicts = {c["name"]: (c.get("comparison") or {}).get("verdict") for c in result["conditions"]}
    assert verdicts == {"r0": None, "r0.5": "not compared", "r1": "not compared", "r2": "not compared"}
    assert any(c.startswith("No comparison with real-only for r0.5, r1, r2") for c in result["caveats"])
