"""One checkpoint schema for every trainer (classifier, DDPM, SD fine-tune).

    weights   -> `<name>.safetensors`  (model / EMA / LoRA tensors; loadable anywhere, no code execution)
    state     -> `<name>.pt`           (optimizer, scheduler, step/epoch, RNG states, small metadata)

Both are written atomically. `state` is loaded with `torch.load(weights_only=True)`, so it may hold only tensors,
numbers, strings, lists and dicts: RNG states are stored as tensors for that reason. A file that cannot be read
is reported as corrupted with a clear message instead of being silently reused or ignored.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mrisynth.errors import UserError
from mrisynth.files import atomic_path, storage_error


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Save a state dict as safetensors atomically (tensors are made contiguous and moved to the CPU)."""
    path = Path(path)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(cpu, str(tmp))
        except Exception as exc:  # safetensors reports a full disk as its own error type, "... (os error 28)"
            _raise_storage_error(exc, path)
    return path


def load_weights(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", remedy: str | None = None
) -> dict[str, torch.Tensor]:
    """Load safetensors weights; a damaged file is a one-line UserError ending in `remedy` (what to do about it).

    The default remedy suits a file a rerun rewrites; callers whose file a rerun would not rewrite say what will.
    """
    path = Path(path)
    remedy = remedy or "delete it and rerun the step that wrote it"
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; {remedy}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise UserError(f"weights file {path} is corrupted ({exc}); {remedy}") from exc


def save_state(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save a training state dict (optimizer, counters, RNG) atomically with torch.save."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            # Through a Python file, so that a failed write keeps its OSError (torch wraps it in a RuntimeError).
            with open(tmp, "wb") as f:
                torch.save(state, f)
        except RuntimeError as exc:
            _raise_storage_error(exc, path)
    return path


def _raise_storage_error(exc: Exception, path: Path) -> None:
    """Re-raise a failed save as the one-line storage error behind it (disk full, quota, ...), else unchanged."""
    cause: BaseException | None = exc
    while cause is not None:
        os_error = cause if isinstance(cause, OSError) else None
        found = re.search(r"os error (\d+)", str(cause))
        if os_error is None and found:
            os_error = OSError(int(found.group(1)), os.strerror(int(found.group(1))))
        error = storage_error(os_error, path) if os_error is not None else None
        if error is not None:
            raise error from exc
        cause = cause.__cause__ or cause.__context__
    raise exc


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training state saved by `save_state` (weights_only=True: no code runs while loading)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise UserError(f"checkpoint {path} does not exist") from exc
    except Exception as exc:  # truncated zip, unpickling refused, ...
        raise UserError(
            f"checkpoint {path} is corrupted or was not written by mrisynth ({exc.__class__.__name__}); "
            "delete it to restart this step from scratch"
        ) from exc


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, in a form `load_state` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": torch.tensor(_python_state_to_list(random.getstate()), dtype=torch.int64),
        "python_gauss": random.getstate()[2],  # None, or the cached second normal deviate of random.gauss
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],  # a cached second normal deviate
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what `capture_rng` captured."""
    random.setstate(_python_state_from_list(state["python"].tolist(), state["python_gauss"]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_list(state: tuple) -> list[int]:
    version, internal, _gauss = state
    return [version, *internal]


def _python_state_from_list(values: list[int], gauss: float | None) -> tuple:
    return (values[0], tuple(values[1:]), gauss)
