"""Data-parallel training across processes, for the classifier and the generators.

Launch the same command under any torchrun-compatible launcher:

    accelerate launch --num_processes 4 -m mrisynth classifier train ...     # one process per GPU
    torchrun --nproc_per_node 4 -m mrisynth classifier train ...
    torchrun --nproc_per_node 2 -m mrisynth classifier train ... --set device=cpu   # CPU, gloo (tests)

Both set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; `init_distributed` reads them and joins the process
group (NCCL on GPUs, gloo on the CPU). A run started without a launcher is a world of one and none of this runs.

How a step is split, so that N processes compute what one process computes: every process draws the *global*
batch (the same indices and the same augmentation parameters, from the same seeded generator), then works on its
own contiguous chunk of it, and DDP averages the gradients. With gradient accumulation each process's chunk is cut
again into `accum` micro-batches. Equal chunks make the averaged gradient the mean over the global batch: only
BatchNorm statistics differ (computed per chunk, as with any DDP run; SyncBatchNorm is used on GPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as tdist
from torch import nn

from mrisynth.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank, world size, and the device it owns."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (checkpoints, metrics, results)."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process (by local rank) when running distributed on CUDA."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def chunks(self, global_batch: int, accum: int = 1) -> list[slice]:
        """The slices of a global batch this process computes: its 1/world share, cut into `accum` micro-batches."""
        if accum < 1:
            raise UserError(f"grad_accum_steps must be at least 1, got {accum}")
        parts = self.world_size * accum
        if global_batch % parts:
            raise UserError(
                f"batch size {global_batch} cannot be split evenly over {self.world_size} process(es) x {accum} "
                "accumulation step(s); choose a batch size divisible by their product"
            )
        size = global_batch // parts
        first = self.rank * accum
        return [slice((first + k) * size, (first + k + 1) * size) for k in range(accum)]

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP-wrap a model (SyncBatchNorm on GPUs so BatchNorm sees the global batch)."""
        if not self.enabled:
            return model
        device = next(model.parameters()).device
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        return nn.parallel.DistributedDataParallel(model)

    def no_sync(self, model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on accumulation micro-steps before the last one."""
        if self.enabled and skip and isinstance(model, nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over processes (e.g. loss sums and counts for logging)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        tdist.all_reduce(value)
        return value


SINGLE_PROCESS = DistContext()


def init_distributed(*, backend_device: str = "cpu") -> DistContext:
    """Join the process group described by the launcher's environment (a no-op without one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if not tdist.is_initialized():
        backend = "nccl" if backend_device == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        tdist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        log.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


@contextlib.contextmanager
def main_process_first(ctx: DistContext) -> Iterator[None]:
    """Let the main process build shared files (e.g. a cache) before the others read them."""
    if not ctx.is_main:
        ctx.barrier()
    yield
    if ctx.is_main:
        ctx.barrier()
