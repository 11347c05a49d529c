"""Each condition on each external set (another site's scans), compared with real-only exactly as on the internal
test set: the same pairing by seed and fold, the same runs x patients test (patients from the external set's own
manifest when it has one; images counted alone otherwise), Holm across the conditions of that set.

Each external set is its own family of comparisons: it answers its own question ("does it help there?"), and a
reader looks at it beside, not instead of, the internal verdicts. The best ratio is the one chosen on internal
validation; its external result is reported as it falls, never chosen on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrisynth.data.manifest import MANIFEST_NAME, load_manifest
from mrisynth.study import stats
from mrisynth.study.comparisons import apply_holm, compare
from mrisynth.study.config import StudyConfig, external_sets
from mrisynth.study.names import BASELINE


def external_patients(path: Path) -> dict[str, str]:
    """{image id: patient id} of a prepared external set; {} for an image tree (no patient IDs)."""
    if not (path / MANIFEST_NAME).is_file():
        return {}
    return {r.id: r.patient_id for r in load_manifest(path) if r.patient_id}


def _on_set(trials: list[dict], name: str) -> list[dict]:
    """The trials with their correctness on external set `name` in place of the internal test set's."""
    return [{**t, "test_correct": t["external"].get(name) or {},
             "missing": None if t["external"].get(name) else f"not scored on external set {name}"} for t in trials]


def external_summary(cfg: StudyConfig, trials: list[dict], conditions: list[dict], best: dict | None) -> dict:
    """{set name: {"path", "conditions": [{name, accuracy, comparison}], "best": the validation-chosen ratio}}."""
    out = {}
    for name, path in external_sets(cfg).items():
        patient_of = external_patients(path)
        rows = []
        for entry in conditions:
            group = _on_set([t for t in trials if t["condition"] == entry["condition"]
                             and t["fraction"] == entry["fraction"]], name)
            accs = [float(np.mean(list(t["test_correct"].values()))) for t in group if t["test_correct"]]
            row = {"name": entry["name"], "kind": entry["kind"], "ratio": entry["ratio"],
                   "fraction": entry["fraction"], "n_trials": len(accs),
                   "accuracy": stats.t_interval(accs, bounds=(0.0, 1.0))}
            if entry["condition"] != BASELINE and group:
                baseline = _on_set([t for t in trials if t["condition"] == BASELINE
                                    and t["fraction"] == entry["fraction"]], name)
                row["comparison"] = compare(baseline, group, n_boot=cfg.bootstrap, seed=len(rows),
                                            patient_of=patient_of)
            rows.append(row)
        apply_holm(rows, alpha=cfg.alpha)
        chosen = next((r for r in rows if best and r["name"] == best.get("name")), None)
        out[name] = {"path": str(path), "conditions": rows,
                     "best": None if chosen is None else {
                         "condition": chosen["name"], "accuracy": chosen["accuracy"],
                         "diff_vs_real_only": (chosen.get("comparison") or {}).get("diff"),
                         "verdict": "baseline" if chosen["name"] == BASELINE
                         else (chosen.get("comparison") or {}).get("verdict")}}
    return out
