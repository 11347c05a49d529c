"""`mrisynth study run|status|report` and `mrisynth demo` wiring (with the fake generator and classifier)."""

from __future__ import annotations

import pytest
import yaml

from mrisynth.cli import main
from test_study_runner import install_fakes


@pytest.fixture
def fakes(monkeypatch):
    return install_fakes(monkeypatch)


def _config_file(tmp_path, data_dir):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"manifest": str(data_dir)}, "classifier": {"base": "tiny"}, "ratios": [0, 1], "seeds": [0],
        "audit": {"enabled": False}, "bootstrap": 100,
    }))
    return path


def test_run_in_two_shards_then_status_and_report(tiny_manifest_dir, tmp_path, fakes, capsys):
    cfg, run = _config_file(tmp_path, tiny_manifest_dir), tmp_path / "run"
    assert main(["study", "run", "--config", str(cfg), "--out", str(run), "--shard", "0/2"]) == 0
    assert "not all trials are done" in capsys.readouterr().out
    assert main(["study", "status", str(run)]) == 0
    assert "done: 1, pending: 1 (of 2)" in capsys.readouterr().out
    assert main(["study", "run", "--config", str(cfg), "--out", str(run), "--shard", "1/2"]) == 0
    assert "report:" in capsys.readouterr().out
    assert main(["study", "report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "index.html" in out and "r1" in out and "verdict" in out


@pytest.mark.parametrize("argv, message", [
    (["--shard", "2/2"], "need 0 <= i < n"),
    (["--shard", "x"], "expects i/n"),
    (["--set", "seeds=[]"], "seeds must be"),
    (["--set", "classifier.epochz=3"], "unknown config key 'classifier.epochz'"),
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_manifest_dir, tmp_path, fakes, capsys, argv, message):
    cfg = _config_file(tmp_path, tiny_manifest_dir)
    assert main(["study", "run", "--config", str(cfg), "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_status_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["study", "status", str(tmp_path)]) == 2
    assert "not a study run directory" in capsys.readouterr().err
