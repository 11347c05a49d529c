"""Checkpoint integrity: the hashes of a checkpoint's weight files are recorded in its state and checked on resume.

safetensors refuses a truncated file, but not one with flipped bytes; a resumed run would carry such damage on
silently. Weights are hashed once when a checkpoint is written and again before it is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mrisynth.errors import UserError
from mrisynth.files import sha256_file


def file_hashes(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: sha256} of the files `names` in `folder` that exist."""
    return {name: sha256_file(folder / name) for name in names if (folder / name).is_file()}


def check_file_hashes(folder: Path, recorded: dict[str, str] | None) -> None:
    """Raise a one-line UserError when a file differs from the hash recorded with it (nothing recorded: no check)."""
    for name, expected in (recorded or {}).items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            raise UserError(f"{path} does not match the sha256 its checkpoint recorded (damaged on disk?); restore "
                            f"it, or delete {folder} to restart training from scratch")
