"""Spreading one study's trials over several worker processes on one machine (e.g. one per GPU).

    mrisynth study run --config rigorous --out runs/r --gpus 0,1,2,3     # one worker per GPU
    mrisynth study run --config demo --out runs/d --workers 2            # CPU workers

Each worker is the ordinary command with `--shard i/n` added (and CUDA_VISIBLE_DEVICES set to its GPU), writing
into the same run directory: the runner's locks make shared stages (data, generator, pool) run once and each
trial run once. Across machines, start the same `--shard i/n` commands yourself (e.g. a Slurm job array).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from mrisynth.errors import UserError

log = logging.getLogger(__name__)


def parse_gpus(text: str) -> list[str]:
    """'0,1,3' -> ['0', '1', '3']; 'all' -> every visible GPU."""
    if text == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise UserError("--gpus all: no CUDA GPU is visible; use --workers N for CPU workers")
        return [str(i) for i in range(count)]
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise UserError(f"--gpus expects a comma-separated list of GPU indices such as 0,1,2 or 'all'; got '{text}'")
    return gpus


def run_workers(base_command: Sequence[str], *, workers: int, gpus: Sequence[str] | None = None) -> int:
    """Run `base_command --shard i/n` in n parallel processes; returns the worst exit code."""
    n = len(gpus) if gpus else workers
    if n < 1:
        raise UserError(f"--workers must be at least 1, got {n}")
    procs = []
    for i in range(n):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        cmd = [sys.executable, "-m", "mrisynth", *base_command, "--shard", f"{i}/{n}"]
        log.info("worker %d/%d%s: %s", i, n, f" on GPU {gpus[i]}" if gpus else "", " ".join(cmd))
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    for i, code in enumerate(codes):
        if code:
            log.error("worker %d exited with code %d", i, code)
    return max(codes)
