"""The run-folder contract every trainer and sampler shares (classifier, DDPM, SD, the study).

    OUT/config.yaml   the fully resolved config of the run that started the folder (what ran, not preset names)

A rerun into the same folder resumes that run. It must use the same settings, or the result would mix two runs;
only the keys each caller lists as `resumable` (how the work is cut up or how loudly it is logged: devices, batch
sizes for evaluation, counts still to reach) may differ, and config.yaml then records the new values. What a run
learned from beyond its settings (the split, the pixels) each trainer checks with its own fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mrisynth.config import check_resumable, read_yaml_mapping, save_config, to_dict

CONFIG_NAME = "config.yaml"


def check_same_run(out_dir: str | os.PathLike, cfg: object, *, resumable: Iterable[str] = ()) -> list[str]:
    """The keys in which `cfg` differs from the run OUT holds ([] for a folder without config.yaml);
    a one-line UserError naming the first one that is not `resumable`. Writes nothing."""
    path = Path(out_dir) / CONFIG_NAME
    if not path.is_file():
        return []
    return check_resumable(read_yaml_mapping(path), to_dict(cfg), resumable=resumable, where=str(out_dir))


def start_run(out_dir: str | os.PathLike, cfg: object, *, resumable: Iterable[str] = ()) -> None:
    """Check that OUT holds no other run (`check_same_run`), then record `cfg` as OUT/config.yaml."""
    path = Path(out_dir) / CONFIG_NAME
    if path.is_file() and not check_same_run(out_dir, cfg, resumable=resumable):
        return  # the same run: config.yaml already says so
    save_config(cfg, path)
