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
