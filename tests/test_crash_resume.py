"""Crash and resume: SIGKILL at a random point inside a step, then the same command again, gives the same
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
from test_data_cli import error_lines

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mrisynth", "-q", *args]


def _lines(path: Path) -> int:
    """Complete lines in a progress file (0 while it does not exist; a torn last line does not count)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_mid_step(cmd: list[str], progress: Path, *, total: int, lines_per_step: int = 1, name: str) -> str:
    """Start `cmd` and SIGKILL it at a random point inside a step, with steps still to do; describe the kill.

    `progress` gains `lines_per_step` lines per finished step (of `total`). The kill comes after step k
    (k random in [2, total - 3]) plus a random fraction of step k's measured duration: a random point of the
    following step, scaled to however fast this machine runs now, with two more steps as a margin. The draws
    are seeded (MRISYNTH_CRASH_SEED, default 0, varies them) so a failure can be replayed.
    """
    rng = random.Random(f"{os.environ.get('MRISYNTH_CRASH_SEED', '0')}:{name}")
    k, fraction = rng.randint(2, total - 3), rng.random()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    first_seen: dict[int, float] = {}  # steps done -> when the poll first saw that count
    while True:
        assert proc.poll() is None, f"{cmd} ended before step {k} was timed"
        assert time.monotonic() < deadline, f"{progress} never reached step {k}"
        done = _lines(progress) // lines_per_step
        first_seen.setdefault(done, time.monotonic())
        # Time a step only from a count the poll saw arrive (not the one present at start, not one it skipped).
        if done >= k and done - 1 >= 1 and done - 1 in first_seen:
            step_seconds = first_seen[done] - first_seen[done - 1]
            break
        time.sleep(0.005)
    time.sleep(fraction * step_seconds)
    what = f"kill after step {done} of {total} + {fraction:.2f} x {step_seconds:.3f} s"
    assert proc.poll() is None, f"the run finished before the {what}: nothing was interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return what


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=300)


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    """Contents by relative path; hidden names are left out: a write killed mid-way leaves its temporary
    `.<name>.tmp*` file behind (the atomic rename never happened), which no later step reads."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))
            if not p.name.startswith(".")}


@pytest.mark.slow
def test_generator_training_killed_then_rerun_gives_identical_weights(tiny_manifest_dir, tmp_path):
    args = ["generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tiny_manifest_dir),
            "--set", "steps=40", "--set", "checkpoint_every=1", "--set", "grid_every=0"]
    _run(_command(*args, "--out", str(tmp_path / "straight")))
    crashed = tmp_path / "crashed"
    # tiny preset: one metrics.jsonl line per step (log_every=1), a checkpoint every step here
    what = _kill_mid_step(_command(*args, "--out", str(crashed)), crashed / "metrics.jsonl", total=40,
                          name="generator")
    assert not (crashed / "generator.json").exists(), f"{what}, but the run had finished"
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
    # one provenance line per image, a batch of 2 per step: 18 steps
    what = _kill_mid_step(_command(*sample, "--out", str(crashed)), crashed / ".provenance.jsonl", total=18,
                          lines_per_step=2, name="generation")
    assert not (crashed / "manifest.csv").exists(), what
    _run(_command(*sample, "--out", str(crashed)))
    assert _files(crashed, "*/*.png") == _files(tmp_path / "straight", "*/*.png")
    assert (crashed / "manifest.csv").read_text().count("\n") == 37  # header + 3 classes x 12


# In the default run: one short classifier run (about 15 s on 2 loaded cores) guards resume end to end.
def test_classifier_trial_killed_then_rerun_gives_identical_result(tiny_manifest_dir, tmp_path):
    # A warm-up + cosine schedule moves the LR every step: a resume that lost the scheduler's state would restart
    # the warm-up, and the LRs after the kill would differ from the uninterrupted run's.
    args = ["classifier", "train", "--data", str(tiny_manifest_dir), "--preset", "tiny", "--set", "epochs=8",
            "--set", "early_stopping_patience=null", "--set", "schedule=cosine", "--set", "warmup_epochs=2",
            "--set", "min_lr=0.00001"]
    _run(_command(*args, "--out", str(tmp_path / "straight")))
    crashed = tmp_path / "crashed"
    # one metrics.jsonl line per epoch
    what = _kill_mid_step(_command(*args, "--out", str(crashed)), crashed / "metrics.jsonl", total=8,
                          name="classifier")
    assert not (crashed / "result.json").exists(), what
    _run(_command(*args, "--out", str(crashed)))

    def outcome(folder: Path) -> dict:
        result = json.loads((folder / "result.json").read_text())
        return {k: result[k] for k in ("val", "test", "best_epoch", "epochs_run")}

    def lrs(folder: Path) -> list[float]:
        return [json.loads(line)["lr"] for line in (folder / "metrics.jsonl").read_text().splitlines()]

    straight = lrs(tmp_path / "straight")
    assert len(straight) == 8 and straight[2] > straight[3] > straight[7]  # it drops after the warm-up
    assert lrs(crashed) == straight
    assert outcome(crashed) == outcome(tmp_path / "straight")
    assert (crashed / "best.safetensors").read_bytes() == (tmp_path / "straight" / "best.safetensors").read_bytes()
    assert (crashed / "predictions.csv").read_text() == (tmp_path / "straight" / "predictions.csv").read_text()


def test_corrupted_checkpoint_is_a_clear_error_not_silently_reused(tiny_manifest_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["classifier", "train", "--data", str(tiny_manifest_dir), "--preset", "tiny", "--set", "epochs=1",
            "--out", str(out)]
    assert main(argv) == 0
    (out / "result.json").unlink()  # as if the run had been killed before finishing ...
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated")  # ... while its checkpoint was being copied elsewhere
    capsys.readouterr()
    code = main(argv)
    err = error_lines(capsys.readouterr().err)
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
    err = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(err) == 1 and words in err[0]
    assert not (out / "manifest.csv").exists()
