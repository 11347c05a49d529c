"""Helpers shared by the bench/ scripts: device synchronisation and peak-memory readings.

The scripts run as `python bench/<name>.py`, which puts bench/ on sys.path, so they import this as `_common`.
"""

from __future__ import annotations

import resource

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read after it measures the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gpu_mib(device: torch.device) -> float | None:
    """Peak GPU memory allocated by torch since the last call, in MiB (the counter is reset); None on the CPU."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def peak_host_mib(*, children: bool = False) -> float:
    """Peak resident memory of this process (plus its finished child processes if `children`), in MiB.

    Linux reports ru_maxrss in KiB.
    """
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        kib += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return kib / 1024
