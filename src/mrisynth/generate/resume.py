"""Resuming a stopped run safely: refuse other settings, forget log records of steps about to be replayed.

Every generator run (training or sampling) writes its resolved config to OUT/config.yaml. A rerun into the same
folder continues the work; it must use the same settings, or the result would mix two runs (a chimera).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mrisynth.config import read_yaml_mapping, to_dict
from mrisynth.errors import UserError
from mrisynth.files import read_jsonl, write_jsonl


def check_resume_settings(saved_yaml_path: str | os.PathLike, cfg: object, *, may_change: Iterable[str]) -> None:
    """Raise UserError when `saved_yaml_path` (a previous run's config) differs from dataclass `cfg`.

    Keys in `may_change` (how the work is cut up: batch sizes, device, counts to reach) may differ. Nothing is
    checked when there is no saved config (a fresh folder). Call this *before* writing anything into the folder.
    """
    path = Path(saved_yaml_path)
    if not path.is_file():
        return
    old = read_yaml_mapping(path)
    allowed = set(may_change)
    for key, value in to_dict(cfg).items():
        if key not in allowed and key in old and old[key] != value:
            raise UserError(
                f"{path.parent} holds a run with {key}={old[key]!r}, not {value!r}; "
                "use a new --out folder, or the same settings to resume"
            )


def drop_records_after(path: str | os.PathLike, step: int) -> None:
    """Rewrite a metrics JSONL file without the records of steps after `step` (they are about to be redone)."""
    path = Path(path)
    if not path.exists():
        return
    write_jsonl(path, [r for r in read_jsonl(path) if r.get("step", 0) <= step])
