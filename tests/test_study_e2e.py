"""A tiny but real study: phantom data, the DDPM generator, the classifier, the audit and the report."""

from __future__ import annotations

import pytest

from mrisynth.cli import main
from mrisynth.config import from_dict
from mrisynth.files import read_json
from mrisynth.report import run_report
from mrisynth.study import StudyConfig, run_study, trial_status

TINY = {
    "data": {"source": "phantom", "phantom": {"patients": 9, "slices_per_patient": 3, "size": 32}},
    "generator": {"backend": "ddpm", "train": {"base": "tiny"},
                  "sample": {"base": "fast", "steps": 2, "batch_size": 16}},
    "classifier": {"base": "tiny", "epochs": 1, "image_size": 16, "model": "tiny"},
    "ratios": [0, 1],
    "seeds": [0],
    "controls": ["real-oversampled"],
    "audit": {"settings": {"image_size": 16, "feature_spaces": ["stats"], "max_per_class": 20,
                           "diversity_pairs": 5}},
    "bootstrap": 100,
}


# In the default run (about 9 s on 2 loaded cores): the whole pipeline, real components, once.
def test_tiny_real_study_end_to_end(tmp_path, capsys):
    cfg = from_dict(StudyConfig, TINY)
    run = tmp_path / "run"
    outcome = run_study(cfg, run, report=run_report)
    assert outcome["complete"] and not outcome["failed"] and len(outcome["trained"]) == 3, outcome
    assert set(trial_status(run).values()) == {"done"}
    r1 = read_json(run / "trials" / "r1-s0" / "result.json")
    assert r1["train_synthetic"] == read_json(run / "trials" / "r1-s0" / "trial.json")["train_synthetic"] > 0
    assert (run / "quality" / "quality.json").is_file()
    summary = read_json(run / "report" / "summary.json")
    assert summary["n_trials_done"] == 3 and summary["audit"]
    # The same command again: nothing is redone, the report is rewritten from the stored results.
    again = run_study(cfg, run, report=run_report)
    assert again["trained"] == [] and len(again["already_done"]) == 3 and again["complete"]
    assert main(["study", "status", str(run)]) == 0
    assert "done: 3" in capsys.readouterr().out


@pytest.mark.slow
def test_workers_on_one_machine_give_the_same_results_as_one_process(tmp_path):
    """`study run --workers 2`: two shard processes share the run directory; results equal a one-process run."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, extra in (("one", []), ("two", ["--workers", "2"])):
        subprocess.run([sys.executable, "-m", "mrisynth", "-q", "study", "run", "--config", str(config),
                        "--out", str(tmp_path / name), *extra], check=True, env=env, capture_output=True, timeout=600)

    def results(run: str) -> dict:
        trials = sorted((tmp_path / run / "trials").iterdir())
        return {t.name: {k: v for k, v in json.loads((t / "result.json").read_text()).items()
                         if k in ("test", "val", "best_epoch", "train_real", "train_synthetic")} for t in trials}

    assert results("two") == results("one") and len(results("one")) == 3
    assert (tmp_path / "two" / "report" / "index.html").is_file()
