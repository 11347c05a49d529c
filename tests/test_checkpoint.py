import random

import numpy as np
import pytest
import torch

from mrisynth.checkpoint import capture_rng, load_state, load_weights, restore_rng, save_state, save_weights
from mrisynth.errors import UserError


def test_rng_round_trip_reproduces_draws(tmp_path):
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    random.gauss(0, 1)  # leaves a cached second deviate in both generators
    np.random.standard_normal()
    save_state({"rng": capture_rng(), "step": 3}, tmp_path / "s.pt")
    expected = (random.gauss(0, 1), np.random.standard_normal(), random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    state = load_state(tmp_path / "s.pt")
    restore_rng(state["rng"])
    assert (random.gauss(0, 1), np.random.standard_normal(), random.random(), np.random.rand(),
            torch.rand(1).item()) == expected
    assert state["step"] == 3


def test_a_torn_jsonl_line_is_skipped_and_later_appends_survive(tmp_path):
    from mrisynth.files import append_jsonl, read_jsonl

    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"b": 2')  # a crash mid-append
    append_jsonl(path, {"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]


def test_weights_round_trip_and_corruption_is_clear(tmp_path):
    w = {"a": torch.arange(6.0).reshape(2, 3)}
    save_weights(w, tmp_path / "w.safetensors")
    assert torch.equal(load_weights(tmp_path / "w.safetensors")["a"], w["a"])
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupted"):
        load_weights(tmp_path / "w.safetensors")
    save_state({"x": 1}, tmp_path / "s.pt")
    data = (tmp_path / "s.pt").read_bytes()
    (tmp_path / "s.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted"):
        load_state(tmp_path / "s.pt")


_FULL_DISK = """
import resource, signal, sys, torch
from mrisynth.checkpoint import save_state, save_weights
from mrisynth.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
save = save_state if sys.argv[2] == "state" else save_weights
try:
    save({"w": torch.zeros(100000)}, sys.argv[1])
except UserError as exc:
    print(exc)
"""


@pytest.mark.parametrize("what", ["state", "weights"])
def test_a_write_that_runs_out_of_space_is_one_line_and_keeps_the_old_checkpoint(what, tmp_path):
    # fault 13: a full disk during a checkpoint write was a traceback (torch and safetensors wrap the OSError)
    import subprocess
    import sys

    path = tmp_path / ("last.pt" if what == "state" else "best.safetensors")
    (save_state if what == "state" else save_weights)({"w": torch.ones(3)}, path)
    old = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path), what], capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip() == (f"cannot write {path}: the file size limit is exceeded; free space or choose a "
                                     "writable --out, then rerun the same command (finished steps are kept)")
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_corrupt_best_checkpoint_advises_retraining_not_a_delete(tmp_path):
    # fault 24: "delete it and rerun" led to "does not exist": a rerun never rewrites the best epoch's weights
    from mrisynth.classify.checkpoint import load_best
    from mrisynth.classify.models import build_classifier

    (tmp_path / "best.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(UserError) as info:
        load_best(build_classifier("tiny", 3), tmp_path)
    assert str(info.value).endswith(f"the best epoch's weights cannot be rebuilt: delete the run folder {tmp_path} "
                                    "and train it again")


def test_an_earlier_classifier_run_or_study_trial_is_recognised_but_a_user_folder_is_not(tmp_path):
    from mrisynth.classify.checkpoint import is_classifier_run

    run, trial, mine = tmp_path / "run", tmp_path / "trial", tmp_path / "mine"
    for folder, names in ((run, ["config.yaml", "metrics.jsonl", "last.pt"]), (trial, ["trial.json"]),
                          (mine, ["config.yaml"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text("")
    assert is_classifier_run(run) and is_classifier_run(trial)
    assert not is_classifier_run(mine)
    (run / "thesis.tex").write_text("")
    assert not is_classifier_run(run)
