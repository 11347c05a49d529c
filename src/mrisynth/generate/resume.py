"""Resuming a stopped generator run: forget the log records of steps about to be replayed. (The "same run?" check
is the shared run-folder contract, mrisynth.runfolder.)"""

from __future__ import annotations

import os
from pathlib import Path

from mrisynth.files import read_jsonl, write_jsonl


def drop_records_after(path: str | os.PathLike, step: int) -> None:
    """Rewrite a metrics JSONL file without the records of steps after `step` (they are about to be redone)."""
    path = Path(path)
    if not path.exists():
        return
    write_jsonl(path, [r for r in read_jsonl(path) if r.get("step", 0) <= step])
