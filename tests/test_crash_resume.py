"""Crash and resume: SIGKILL at a random point of a long step, then the same command again, gives the same
final result as an uninterrupted run (bit-for-bit on the CPU). Plus the failures a user can fix: a corrupted
checkpoint, a full disk, a read-only folder, each a one-line error with nothing silently reused."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mrisynth.cli import main
from mrisynth.data.images import save_grayscale_png

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mrisynth", "-q", *args]


def _kill_at_random_point(cmd: list[str], started: Path, *, max_delay: float) -> float:
    """Start `cmd`, wait until `started` exists (the step is under way), SIGKILL it after a random delay.

    Returns the delay; fails if the process finished before it could be killed (the test would prove nothing).
    """
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not started.exists():
        assert proc.poll() is None, f"{cmd} ended before {started} appeared"
        assert time.monotonic() < deadline, f"{started} never appeared"
        time.sleep(0.02)
    delay = random.uniform(0.0, max_delay)
    time.sleep(delay)
    assert proc.poll() is None, f"the step finished within {delay:.2f} s: nothing was interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return delay


def _error_lines(stderr: str) -> list[str]:
    """What the CLI reported as errors (progress bars share stderr and redraw with carriage returns)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("mrisynth:")]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=300)


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))}


@pytest.mark.slow
def test_generator_training_killed_then_rerun_gives_identical_weights(tiny_manifest_dir, tmp_path):
    args = ["generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tiny_manifest_dir),
            "--set", "steps=40", "--set", "checkpoint_every=1", "--set", "grid_every=0"]
    _run(_command(*args, "--out", str(tmp_path / "straight")))
    crashed = tmp_path / "crashed"
    delay = _kill_at_random_point(_command(*args, "--out", str(crashed)), crashed / "checkpoint", max_delay=1.0)
    assert not (crashed / "generator.json").exists(), f"killed after {delay:.2f} s but the run had finished"
    _run(_command(*args, "--out", str(crashed)))
    assert _files(crashed, "unet/*") == _files(tmp_path / "straight", "unet/*")
    assert json.loads((crashed / "generator.json").read_text())["sha256"] == \
        json.loads((tmp_path / "straight" / "generator.json").read_text())["sha256"]


@pytest.mark.slow
def test_generation_killed_then_rerun_gives_identical_images(tiny_manifest_dir, tmp_path):
    gen = tmp_path / "gen"
    _run(_command("generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tiny_manifest_dir),
                  "--out", str(gen), "--set", "grid_every=0"))
    sample = ["generator", "sample", "--generator", str(gen), "--n-per-class", "12", "--set", "batch_size=2"]
    _run(_command(*sample, "--out", str(tmp_path / "straight")))
    crashed = tmp_path / "crashed"
    _kill_at_random_point(_command(*sample, "--out", str(crashed)), crashed / ".provenance.jsonl", max_delay=0.5)
    assert not (crashed / "manifest.csv").exists()
    _run(_command(*sample, "--out", str(crashed)))
    assert _files(crashed, "*/*.png") == _files(tmp_path / "straight", "*/*.png")
    assert (crashed / "manifest.csv").read_text().count("\n") == 37  # header + 3 classes x 12


@pytest.mark.slow
def test_classifier_trial_killed_then_rerun_gives_identical_result(tiny_manifest_dir, tmp_path):
    args = ["classifier", "train", "--data", str(tiny_manifest_dir), "--preset", "tiny", "--set", "epochs=8",
            "--set", "early_stopping_patience=null"]
    _run(_command(*args, "--out", str(tmp_path / "straight")))
    crashed = tmp_path / "crashed"
    _kill_at_random_point(_command(*args, "--out", str(crashed)), crashed / "last.pt", max_delay=0.3)
    assert not (crashed / "result.json").exists()
    _run(_command(*args, "--out", str(crashed)))

    def outcome(folder: Path) -> dict:
        result = json.loads((folder / "result.json").read_text())
        return {k: result[k] for k in ("val", "test", "best_epoch", "epochs_run")}

    assert outcome(crashed) == outcome(tmp_path / "straight")
    assert (crashed / "best.safetensors").read_bytes() == (tmp_path / "straight" / "best.safetensors").read_bytes()
    assert (crashed / "predictions.csv").read_text() == (tmp_path / "straight" / "predictions.csv").read_text()


def test_corrupted_checkpoint_is_a_clear_error_not_silently_reused(tiny_manifest_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    code = main(["classifier", "train", "--data", str(tiny_manifest_dir), "--preset", "tiny", "--out", str(out)])
    err = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "corrupted" in err[0] and "last.pt" in err[0]
    assert not (out / "result.json").exists()


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only")])
def test_disk_full_or_read_only_output_is_a_one_line_error(tmp_path, monkeypatch, capsys, code, words):
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("manifest.csv"):
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst)

    source = tmp_path / "source"
    for name in ("glioma", "meningioma", "pituitary"):
        (source / name).mkdir(parents=True)
        for i in range(4):
            save_grayscale_png(np.full((16, 16), 40 * i, np.uint8), source / name / f"{name}{i}.png")
    monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "out"
    rc = main(["data", "prepare", str(source), "--out", str(out), "--split", "seed"])
    err = _error_lines(capsys.readouterr().err)
    assert rc == 2 and len(err) == 1 and words in err[0]
    assert not (out / "manifest.csv").exists()
