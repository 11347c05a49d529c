"""The one place where randomness is seeded."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch; on request make PyTorch choose deterministic kernels.

    Same seed and same machine then give the same numbers on the CPU (GPU kernels may still differ run to run
    unless `deterministic` is set, at some cost in speed).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set both ways: an earlier step of the same process (e.g. generator training in a study) may have asked
    # for deterministic kernels that a later fast-preset step does not want.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (e.g. ("trial", condition, seed)); independent of PYTHONHASHSEED."""
    import hashlib

    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
