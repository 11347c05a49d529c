"""Collect finished trials into one table and compare every condition with real-only.

The best ratio is chosen on validation accuracy (mean over seeds; with folds, in each fold separately); the
test set is only reported, never used to choose. Comparisons (study/comparisons.py) pair each trial with the
real-only trial of the same seed and fold, on the same test images, clustered by the manifest's patients.
A trial whose result.json exists but whose predictions.csv is missing is listed under "incomplete" and its
condition gets no verdict.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from mrisynth.data.manifest import MANIFEST_NAME, load_manifest
from mrisynth.files import read_json
from mrisynth.study import stats
from mrisynth.study.comparisons import NOT_COMPARED, apply_holm, compare, power_warnings
from mrisynth.study.conditions import Condition, build_conditions, build_trials, real_fractions
from mrisynth.study.config import StudyConfig, external_sets
from mrisynth.study.external import external_summary
from mrisynth.study.names import BASELINE, EVAL_SETS, RATIO, TEST, VAL, arm_label
from mrisynth.study.regimes import regime_summary
from mrisynth.study.trial import EXTERNAL_DIR, EXTERNAL_PREDICTIONS

log = logging.getLogger(__name__)

METRICS = ("accuracy", "f1_macro", "mcc", "auc_ovr", "auc_weighted")


def load_trial_results(run: str | os.PathLike, cfg: StudyConfig) -> list[dict]:
    """One dict per finished trial: its trial.json, result.json and test correctness by image id.

    A trial without test predictions gets `missing` (the reason) and an empty `test_correct`.
    """
    run = Path(run)
    out = []
    for trial in build_trials(cfg):
        d = run / "trials" / trial.name
        if not (d / "result.json").is_file():
            continue
        result = read_json(d / "result.json")
        correct = read_test_correctness(d / "predictions.csv")
        out.append({
            "trial": trial.name, "condition": trial.condition.name, "kind": trial.condition.kind,
            "ratio": trial.condition.ratio, "seed": trial.seed, "fold": trial.fold, "fraction": trial.fraction,
            "dir": str(d),
            "result": result, "info": read_json(d / "trial.json") if (d / "trial.json").is_file() else {},
            "test_correct": correct,
            "missing": None if correct else "no test rows in predictions.csv (missing or empty)",
            "external": {name: read_test_correctness(d / EXTERNAL_DIR / name / EXTERNAL_PREDICTIONS)
                         for name in external_sets(cfg)},
        })
        if not correct:
            log.warning("trial %s has a result.json but no test predictions; its condition gets no verdict", d)
    return out


def read_test_correctness(path: Path) -> dict[str, bool]:
    """{image id: predicted class == true class} over the test rows of predictions.csv."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["id"]: row["pred_class"] == row["true_class"] for row in csv.DictReader(f)
                if row.get("split", TEST) == TEST}


def results_rows(trials: list[dict], *, n_boot: int = 2000) -> list[dict]:
    """The per-trial table written as results.csv (with a bootstrap CI of each trial's test accuracy)."""
    rows = []
    for t in trials:
        res = t["result"]
        row = {k: t[k] for k in ("trial", "condition", "kind", "ratio", "seed", "fold", "fraction")}
        row["train_real"] = res.get("train_real", t["info"].get("train_real"))
        row["train_synthetic"] = res.get("train_synthetic", t["info"].get("train_synthetic"))
        for split in EVAL_SETS:
            for m in METRICS:
                row[f"{split}_{m}"] = (res.get(split) or {}).get(m)
        correct = np.array(list(t["test_correct"].values()), dtype=bool)
        if len(correct):
            ci = stats.bootstrap_ci(correct, n_boot=n_boot, seed=_seed_of(t["trial"]))
            row["test_accuracy_lo"], row["test_accuracy_hi"] = ci["lo"], ci["hi"]
        row["best_epoch"], row["epochs_run"], row["seconds"] = (res.get(k) for k in ("best_epoch", "epochs_run", "seconds"))
        rows.append(row)
    return rows


def summarize(run: str | os.PathLike, cfg: StudyConfig, trials: list[dict] | None = None) -> dict:
    """Everything the report shows, as one JSON-ready dict (see report/ for how it is drawn); `trials` are
    the run's `load_trial_results` when the caller has them already.

    Each condition at each real fraction is one entry, compared with real-only at the same fraction; Holm runs
    across all of them. The best ratio is chosen on validation at the largest fraction.
    """
    run = Path(run)
    trials = load_trial_results(run, cfg) if trials is None else trials
    patient_of = patients_by_image(run)
    conditions = []
    for fraction in real_fractions(cfg):
        here = [t for t in trials if t["fraction"] == fraction]
        baseline = [t for t in here if t["condition"] == BASELINE]
        for c in build_conditions(cfg):
            group = [t for t in here if t["condition"] == c.name]
            entry = _condition_entry(c, group, fraction)
            if c.name != BASELINE and group:
                entry["comparison"] = compare(baseline, group, n_boot=cfg.bootstrap,
                                              seed=_seed_of(entry["name"]), patient_of=patient_of)
            conditions.append(entry)
    apply_holm(conditions, alpha=cfg.alpha)
    top = real_fractions(cfg)[0]
    best = choose_best([c for c in conditions if c["fraction"] == top], [t for t in trials if t["fraction"] == top])
    incomplete = [{"trial": t["trial"], "reason": t["missing"]} for t in trials if t["missing"]]
    return {
        "n_trials_done": len(trials),
        "n_trials_total": len(build_trials(cfg)),
        "incomplete": incomplete,
        "conditions": conditions,
        "best": best,
        "real_fractions": real_fractions(cfg),
        "regimes": regime_summary(conditions, trials, n_boot=cfg.bootstrap),
        "external": external_summary(cfg, trials, conditions, best),
        "caveats": caveats(run, cfg) + power_warnings(conditions) + _incomplete_notes(conditions, incomplete),
        "leakage": _read_optional(run / "data" / "audit" / "leakage.json"),
        "audit": audit_headline(run / "quality" / "quality.json"),
        "alpha": cfg.alpha,
        "seeds": list(cfg.seeds),
        "folds": cfg.folds,
    }


def _condition_entry(c: Condition, group: list[dict], fraction: float) -> dict:
    """A condition's scores at one real fraction: mean and t-interval over its runs for every metric."""
    entry = {"name": arm_label(c.name, fraction), "condition": c.name, "kind": c.kind, "ratio": c.ratio,
             "fraction": fraction, "n_trials": len(group), "n_incomplete": sum(1 for t in group if t["missing"])}
    for split in EVAL_SETS:
        for m in METRICS:
            values = [(t["result"].get(split) or {}).get(m) for t in group]
            values = [v for v in values if v is not None and not _isnan(v)]
            entry[f"{split}_{m}"] = stats.t_interval(values, bounds=(-1.0, 1.0) if m == "mcc" else (0.0, 1.0))
    entry["test_recall"] = _per_class_recall(group)
    entry["train_synthetic"] = _first(group, "train_synthetic")
    entry["train_real"] = _first(group, "train_real")
    return entry


def patients_by_image(run: Path) -> dict[str, str]:
    """{image id: patient id} from the run's manifest (empty when the run has none or no patient IDs)."""
    data_dir = run_data_dir(run)
    if data_dir is None:
        return {}
    return {r.id: r.patient_id for r in load_manifest(data_dir) if r.patient_id}


def _incomplete_notes(conditions: list[dict], incomplete: list[dict]) -> list[str]:
    notes = []
    if incomplete:
        notes.append(f"{len(incomplete)} finished trial(s) have no test predictions (predictions.csv): "
                     + ", ".join(t["trial"] for t in incomplete) + ". Their conditions get no verdict; rerun "
                     "those trials.")
    blocked = [c for c in conditions if (c.get("comparison") or {}).get("verdict") == NOT_COMPARED]
    if blocked:
        notes.append(f"No comparison with real-only for {', '.join(c['name'] for c in blocked)}: "
                     f"{blocked[0]['comparison']['reason']}.")
    return notes


def choose_best(conditions: list[dict], trials: list[dict] | None = None) -> dict | None:
    """The ratio with the highest mean validation accuracy (ties: the smaller ratio); controls excluded.

    With cross-validation fold k's validation fold is fold k+1's test fold, so choosing once on validation
    pooled over folds would choose on test images. There the choice is made per fold (`trials` needed) and
    scored on that fold's test fold only: a nested estimate (see `_choose_per_fold`).
    """
    if trials and any(t["fold"] >= 0 for t in trials):
        return _choose_per_fold(conditions, trials)
    ladder = [c for c in conditions if c["kind"] == RATIO and c["n_trials"] and not _isnan(c["val_accuracy"]["mean"])]
    if not ladder:
        return None
    best = max(ladder, key=lambda c: (round(c["val_accuracy"]["mean"], 12), -c["ratio"]))
    comparison = best.get("comparison") or {}
    return {"condition": _plain(best), "name": best["name"], "fraction": best.get("fraction", 1.0),
            "ratio": best["ratio"], "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"],
            "verdict": _verdict_of(_plain(best), comparison), "diff_vs_real_only": comparison.get("diff")}


def _plain(entry: dict) -> str:
    """A condition entry's condition name without its real-fraction suffix."""
    return entry.get("condition", entry["name"])


def _verdict_of(name: str, comparison: dict) -> str:
    return "baseline" if name == BASELINE else comparison.get("verdict", NOT_COMPARED)


def _choose_per_fold(conditions: list[dict], trials: list[dict]) -> dict | None:
    """Per fold: the ratio with the best validation accuracy (mean over seeds) in that fold, and its test
    accuracy and difference from real-only on that fold's test fold. The headline is the mean over folds;
    `condition` is the ratio chosen most often (ties: the smaller), for figures."""
    ratio_of = {_plain(c): c["ratio"] for c in conditions if c["kind"] == RATIO}
    scores: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        if t["condition"] in ratio_of:
            for split in EVAL_SETS:
                value = (t["result"].get(split) or {}).get("accuracy")
                if value is not None and not _isnan(value):
                    scores[(t["fold"], t["condition"])][split].append(float(value))
    per_fold = []
    for fold in sorted({f for f, _ in scores}):
        here = {name: s for (f, name), s in scores.items() if f == fold and s[VAL] and s[TEST]}
        if not here:
            continue
        name = max(here, key=lambda n: (round(float(np.mean(here[n][VAL])), 12), -ratio_of[n]))
        test = float(np.mean(here[name][TEST]))
        diff = test - float(np.mean(here[BASELINE][TEST])) if BASELINE in here else None
        per_fold.append({"fold": fold, "condition": name, "val_accuracy": float(np.mean(here[name][VAL])),
                         "test_accuracy": test, "diff_vs_real_only": diff})
    if not per_fold:
        return None
    chosen = [f["condition"] for f in per_fold]
    condition = max(set(chosen), key=lambda n: (chosen.count(n), -ratio_of[n]))
    diffs = [f["diff_vs_real_only"] for f in per_fold if f["diff_vs_real_only"] is not None]
    same = len(set(chosen)) == 1
    entry = next(c for c in conditions if _plain(c) == condition)
    comparison = entry.get("comparison") or {}
    return {"condition": condition, "name": entry["name"], "fraction": entry.get("fraction", 1.0),
            "ratio": ratio_of[condition], "per_fold": per_fold,
            "val_accuracy": stats.t_interval([f["val_accuracy"] for f in per_fold], bounds=(0.0, 1.0)),
            "test_accuracy": stats.t_interval([f["test_accuracy"] for f in per_fold], bounds=(0.0, 1.0)),
            "diff_vs_real_only": float(np.mean(diffs)) if len(diffs) == len(per_fold) else None,
            "verdict": _verdict_of(condition, comparison) if same else "the choice differs across folds"}


def caveats(run: Path, cfg: StudyConfig) -> list[str]:
    """Protocol limits a reader must know, measured from the run where possible."""
    notes = []
    if len(cfg.seeds) < 2:
        notes.append("One seed per condition: the spread across training runs is not measured, so the "
                     "per-condition intervals are missing and small differences may be noise.")
    data_dir = run_data_dir(run)
    if cfg.folds == 0 and data_dir is not None:
        records = load_manifest(data_dir)
        train_p = {r.patient_id for r in records if r.split == "train" and r.patient_id}
        test_p = {r.patient_id for r in records if r.split == TEST and r.patient_id}
        shared = test_p & train_p
        if shared:
            notes.append(f"The split is not patient-wise: {len(shared)} of {len(test_p)} test patients also have "
                         "slices in the training set, so adjacent near-duplicate slices inflate test accuracy.")
    if len(cfg.seeds) > 1:
        notes.append("Seeds vary the classifier's training only: one generator and one synthetic pool serve "
                     "every seed" + (" of a fold." if cfg.folds else "."))
    if cfg.folds:
        notes.append("The best ratio is chosen in each fold on that fold's validation fold and scored on its test "
                     "fold (nested): a validation fold is another fold's test fold, so validation is never pooled "
                     "across folds to choose. Its test accuracy is the mean over folds of each fold's choice.")
    else:
        notes.append("The best ratio is chosen on validation accuracy; the test set is reported, never used to "
                     "choose.")
    notes.extend(audit_warnings(run / "quality" / "quality.json"))
    notes.append("Verdicts compare each condition with real-only run by run (same seed and fold, same test "
                 "images) with a t-test whose error counts both training runs and test patients as the units "
                 f"that vary (study/stats.py), Holm-corrected across conditions at alpha={cfg.alpha}; the Δ "
                 "interval is drawn at the level Holm tested that comparison, so it excludes 0 exactly when the "
                 "verdict is helps or hurts. McNemar per seed and the per-image sign-flip p are in summary.json.")
    return notes


def audit_headline(path: Path) -> list[list] | None:
    """The audit's headline numbers from quality.json as rows [measure, synthetic, real reference].

    The reference says what "close" means: FD/KID and precision/recall of a real half against another real
    half at the same size; MS-SSIM of real pairs; nearest-neighbour copies of held-out real images.
    """
    data = _read_optional(path)
    if not isinstance(data, dict):
        return None
    rows: list[list] = []
    for space, block in (data.get("feature_spaces") or {}).items():
        syn = block.get("overall") or {}
        ref = ((block.get("real_vs_real") or {}).get("synthetic_vs_half") or {}).get("overall") or {}
        real = (block.get("real_vs_real") or {}).get("overall") or {}
        for key in ("fd", "kid"):
            if key in syn:
                rows.append([f"{space}: {key.upper()} to real train half A, at equal n (lower = closer)",
                             ref.get(key, syn[key]), real.get(key)])
        for key in ("precision", "recall", "density", "coverage"):
            if key in syn:
                rows.append([f"{space}: {key}", syn[key], real.get(key)])
    for cls, d in ((data.get("diversity") or {}).get("per_class") or {}).items():
        rows.append([f"MS-SSIM within class {cls} (higher = less diverse)",
                     (d.get("synthetic") or {}).get("msssim"), (d.get("real") or {}).get("msssim")])
    pixel = (data.get("memorisation") or {}).get("pixel") or {}
    if pixel:
        held = pixel.get("heldout_in_train") or {}
        rows.append([f"share of images with a training image at pixel correlation >= {pixel.get('threshold')}",
                     pixel.get("share_above"), held.get("share_above")])
    patients = (data.get("memorisation") or {}).get("patients_reproduced")
    if patients is not None:
        rows.append(["training patients reproduced by some synthetic image", len(patients), None])
    return rows or None


def audit_warnings(path: Path) -> list[str]:
    """Plain-language warnings when the audit finds the synthetic set far from the real one, or copying it."""
    data = _read_optional(path)
    if not isinstance(data, dict):
        return []
    notes = []
    for space, block in (data.get("feature_spaces") or {}).items():
        syn = block.get("overall") or {}
        real = (block.get("real_vs_real") or {}).get("overall") or {}
        if real.get("precision", 0) > 0.5 and syn.get("precision", 1) < 0.1 * real["precision"]:
            notes.append(f"The synthetic images are far from the real ones in the {space} feature space "
                         f"(precision {syn['precision']:.2f} vs {real['precision']:.2f} for real against real): "
                         "few look like real training images, so read any effect of adding them with that in mind.")
    patients = (data.get("memorisation") or {}).get("patients_reproduced") or []
    if patients:
        notes.append(f"{len(patients)} training patient(s) have a slice that some synthetic image nearly copies "
                     "(see the audit's worst pairs): a privacy risk if the synthetic set is shared.")
    return notes


def run_data_dir(run: Path) -> Path | None:
    """The run's real data folder: RUN/data, or the reused manifest folder named in RUN/data.json."""
    if (run / "data" / MANIFEST_NAME).is_file():
        return run / "data"
    if (run / "data.json").is_file():
        return Path(read_json(run / "data.json")["manifest"])
    return None


def _per_class_recall(group: list[dict]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for t in group:
        for cls, m in ((t["result"].get(TEST) or {}).get("per_class") or {}).items():
            if m.get("recall") is not None:
                values[cls].append(float(m["recall"]))
    return {cls: float(np.mean(v)) for cls, v in sorted(values.items())}


def _first(group: list[dict], key: str) -> int | None:
    for t in group:
        value = t["result"].get(key, t["info"].get(key))
        if value is not None:
            return value
    return None


def _read_optional(path: Path) -> dict | None:
    try:
        return read_json(path) if path.is_file() else None
    except Exception:  # a corrupt optional file must not stop the report; say so in the log
        log.warning("could not read %s; left out of the report", path)
        return None


def _seed_of(name: str) -> int:
    from mrisynth.seeding import derive_seed

    return derive_seed("bootstrap", name)


def _isnan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)
