"""Data parallelism on the CPU (gloo): N processes must compute what one process computes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from mrisynth.classify.config import AugmentConfig
from mrisynth.classify.data import DeviceSet
from mrisynth.classify.train import train_one_epoch
from mrisynth.distributed import DistContext


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data() -> DeviceSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (48,), generator=g)
    return DeviceSet(images=images, labels=labels, ids=[str(i) for i in range(48)])


def _train(dist: DistContext, accum: int) -> dict[str, torch.Tensor]:
    """Two epochs of a BatchNorm-free model (BatchNorm statistics are per process by design)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    net = dist.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = _data()
    for epoch in range(2):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(data), generator=g)
        train_one_epoch(net, optimizer, data, order, augment=AugmentConfig(), generator=g, batch_size=16,
                        dist=dist, accum=accum)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    weights = _train(DistContext(rank=rank, world_size=world, local_rank=rank), accum=1)
    if rank == 0:
        torch.save(weights, out)
    tdist.destroy_process_group()


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single = _train(DistContext(), accum=1)
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_matches_the_full_batch():
    full = _train(DistContext(), accum=1)
    accumulated = _train(DistContext(), accum=4)
    for name, value in full.items():
        torch.testing.assert_close(accumulated[name], value, rtol=1e-4, atol=1e-5)


def test_uneven_split_is_a_clear_error():
    from mrisynth.errors import UserError

    with pytest.raises(UserError, match="cannot be split evenly"):
        DistContext(rank=0, world_size=2).chunks(15)


@pytest.mark.slow
def test_cli_under_torchrun_two_processes(tiny_manifest_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m mrisynth classifier train`: one result, close to a one-process run."""
    def run(n: int, out: str) -> dict:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
               str(_free_port()), "-m", "mrisynth", "-q", "classifier", "train", "--data", str(tiny_manifest_dir),
               "--preset", "tiny", "--out", out, "--set", "device=cpu", "--set", "batch_size=6"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
        return json.loads((tmp_path / out / "result.json").read_text())

    os.chdir(tmp_path)
    one, two = run(1, "one"), run(2, "two")
    assert two["train_real"] == one["train_real"] == 18
    # The tiny ResNet has BatchNorm, whose batch statistics are per process on the CPU: a stated tolerance.
    assert abs(two["val"]["loss"] - one["val"]["loss"]) < 0.25
    assert len(json.loads(json.dumps(two["test"]["confusion"]))) == 3


def _ddpm_weights(folder) -> dict[str, torch.Tensor]:
    from mrisynth.checkpoint import load_weights

    return load_weights(folder / "checkpoint" / "unet.safetensors")


def test_ddpm_micro_batches_give_the_full_batch_gradient():
    """The diffusion UNet has GroupNorm only: computing a global batch in parts changes only float rounding."""
    from mrisynth.config import load_config
    from mrisynth.generate import ddpm
    from mrisynth.generate.ddpm_train import TrainingData, diffusion_loss, draw_batch, draw_noise

    torch.manual_seed(0)
    cfg = load_config(ddpm.TrainConfig, preset="tiny", overrides=["batch_size=8"])
    unet, scheduler = ddpm.build_unet(cfg, 3), ddpm.build_noise_scheduler(cfg)
    size = cfg.image_size
    data = TrainingData(images=torch.randint(0, 256, (20, 1, size, size), dtype=torch.uint8),
                        labels=torch.randint(0, 3, (20,)), classes=["a", "b", "c"])

    def gradients(parts: list[slice]) -> dict[str, torch.Tensor]:
        rng = torch.Generator().manual_seed(5)
        unet.zero_grad()
        x0, labels = draw_batch(data, cfg, rng=rng)
        noise, t = draw_noise(scheduler, x0, patch=cfg.patch, rng=rng)
        for p in parts:
            loss = diffusion_loss(unet, scheduler, x0[p], labels[p], patch=cfg.patch, noise=noise[p], t=t[p])
            (loss / len(parts)).backward()
        return {n: q.grad.clone() for n, q in unet.named_parameters()}

    full = gradients(DistContext().chunks(8))
    parts = [c for rank in range(2) for c in DistContext(rank=rank, world_size=2).chunks(8, accum=2)]
    split = gradients(parts)
    scale = max(g.abs().max() for g in full.values())
    for name, value in full.items():
        torch.testing.assert_close(split[name], value, rtol=0, atol=1e-5 * scale.item())


@pytest.mark.slow
def test_ddpm_under_torchrun_two_processes_matches_one(tiny_manifest_dir, tmp_path):
    def run(n: int):
        out = tmp_path / f"gen{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
               str(_free_port()), "-m", "mrisynth", "-q", "generator", "train", "--backend", "ddpm", "--preset",
               "tiny", "--data", str(tiny_manifest_dir), "--out", str(out), "--set", "device=cpu",
               "--set", "grid_every=0"]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
        return _ddpm_weights(out)

    one, two = run(1), run(2)
    # Gradients agree to float rounding (test above), but Adam turns rounding noise in near-zero gradients
    # (conv biases cancelled by GroupNorm) into steps of up to lr: the stated tolerance is 2 x lr x steps.
    from mrisynth.config import load_config
    from mrisynth.generate import ddpm

    tiny = load_config(ddpm.TrainConfig, preset="tiny")
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=2 * tiny.lr * tiny.steps)
