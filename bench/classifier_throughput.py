"""Training throughput of the classifier engine against a plain PyTorch baseline, measured in the same run.

    python bench/classifier_throughput.py                        # CPU: resnet18, 64 px, 256 PNGs it writes itself
    python bench/classifier_throughput.py --data runs/x/data     # a prepared data folder (its train split)
    python bench/classifier_throughput.py --model resnet50 --size 224 --batch 256 --images 3064   # GPU

Engine: the data set packed once into a uint8 cache and kept on the device, augmentation as one batched
affine_grid + grid_sample per batch, bf16 autocast + channels_last + torch.compile on a GPU (as preset `fast`).
Baseline: a torchvision DataLoader reading the image files with PIL transforms of the same family, fp32, eager.
Same model, batch, optimizer and number of images. Prints images/s of each, the ratio, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from mrisynth.classify.config import AugmentConfig
from mrisynth.classify.data import DeviceSet, epoch_order
from mrisynth.classify.models import build_classifier
from mrisynth.classify.train import train_one_epoch
from mrisynth.data.cache import load_cache
from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord, load_manifest, save_classes, save_manifest
from mrisynth.seeding import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when not run as a script
from _common import peak_gpu_mib, peak_host_mib, sync  # noqa: E402

CLASSES = ["glioma", "meningioma", "pituitary"]


def write_png_folder(root: Path, n: int, *, native: int = 256) -> Path:
    """A prepared data folder of `n` random-texture PNGs at `native` px, all in the train split."""
    rng = np.random.default_rng(0)
    records = []
    (root / "images").mkdir(parents=True)
    for i in range(n):
        label = i % len(CLASSES)
        arr = rng.integers(0, 256, (native, native), dtype=np.uint8)
        path = root / "images" / f"img{i:05d}.png"
        save_grayscale_png(arr, path)
        records.append(ImageRecord(id=f"img{i:05d}", path=str(path), class_name=CLASSES[label], label=label,
                                   split="train", width=native, height=native))
    save_manifest(records, root / "manifest.csv")
    save_classes(CLASSES, root)
    return root


class FileDataset(Dataset):
    """The plain way: open each file with PIL and transform it, one image at a time, in worker processes."""

    def __init__(self, records: list[ImageRecord], size: int, aug: AugmentConfig) -> None:
        self.records = records
        self.transform = T.Compose([
            T.Resize((size, size)),
            T.RandomHorizontalFlip(),
            T.RandomAffine(aug.rotation_deg, translate=(aug.shift, aug.shift), scale=(1 - aug.zoom, 1 + aug.zoom),
                           shear=aug.shear_deg),
            T.ColorJitter(brightness=(aug.brightness_min, aug.brightness_max)),
            T.ToTensor(),  # (1, S, S) in [0, 1]
        ])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rec = self.records[i]
        with Image.open(rec.path) as img:
            return self.transform(img.convert("L")), rec.label


def run_engine(args, data_dir: Path, device: torch.device) -> dict:
    on_gpu = device.type == "cuda"
    t0 = time.perf_counter()
    cache = load_cache(data_dir, args.size)
    rows = cache.indices("train")[: args.images]
    train = DeviceSet(images=torch.from_numpy(np.asarray(cache.images[np.sort(rows)])).unsqueeze(1).to(device),
                      labels=torch.from_numpy(cache.labels[np.sort(rows)]).to(device),
                      ids=[cache.records[i].id for i in np.sort(rows)])
    prep = time.perf_counter() - t0
    model = build_classifier(args.model, len(cache.classes)).to(device)
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if on_gpu and not args.no_compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    kwargs = dict(augment=AugmentConfig(), generator=gen, batch_size=args.batch, amp=on_gpu, channels_last=on_gpu)
    # On a GPU the warm-up is a whole epoch, so torch.compile has also seen the last, shorter batch.
    warm_images = len(train) if on_gpu else min(len(train), args.batch * args.warmup_batches)
    warm = epoch_order(len(train), warm_images, generator=gen)
    train_one_epoch(net, optimizer, train, warm, **kwargs, desc="engine warm-up")  # compile, allocator, caches
    sync(device)
    images, seconds = 0, 0.0
    for _ in range(args.epochs):
        order = epoch_order(len(train), len(train), generator=gen)
        stats = train_one_epoch(net, optimizer, train, order, **kwargs, desc="engine")
        images, seconds = images + stats["images"], seconds + stats["train_seconds"]
    return {"images_per_second": images / seconds, "images": images, "seconds": seconds, "prep_seconds": prep}


def run_baseline(args, data_dir: Path, device: torch.device) -> dict:
    records = [r for r in load_manifest(data_dir) if r.split == "train"][: args.images]
    loader = DataLoader(FileDataset(records, args.size, AugmentConfig()), batch_size=args.batch, shuffle=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda", drop_last=False,
                        persistent_workers=args.workers > 0)
    model = build_classifier(args.model, len(CLASSES)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def one_pass(limit: int | None) -> tuple[int, float]:
        seen, start = 0, time.perf_counter()
        for step, (x, y) in enumerate(loader):
            if limit is not None and step >= limit:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        sync(device)
        return seen, time.perf_counter() - start

    one_pass(args.warmup_batches)  # start workers, warm caches
    images, seconds = 0, 0.0
    for _ in range(args.epochs):
        n, s = one_pass(None)
        images, seconds = images + n, seconds + s
    return {"images_per_second": images / seconds, "images": images, "seconds": seconds}


def main() -> None:
    on_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="prepared data folder (default: write PNGs)")
    parser.add_argument("--model", default="resnet50" if on_gpu else "resnet18")
    parser.add_argument("--size", type=int, default=224 if on_gpu else 64)
    parser.add_argument("--batch", type=int, default=256 if on_gpu else 32)
    parser.add_argument("--images", type=int, default=3064 if on_gpu else 256, help="training images used")
    parser.add_argument("--epochs", type=int, default=2 if on_gpu else 1, help="timed passes over the images")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="baseline DataLoader")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="engine without torch.compile on GPU")
    args = parser.parse_args()
    device = torch.device("cuda" if on_gpu else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0, deterministic=False)
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or write_png_folder(Path(tmp) / "data", args.images)
        engine = run_engine(args, data_dir, device)
        engine["peak_host_mib"], engine["peak_gpu_mib"] = peak_host_mib(children=True), peak_gpu_mib(device)
        baseline = run_baseline(args, data_dir, device)
        baseline["peak_host_mib"], baseline["peak_gpu_mib"] = peak_host_mib(children=True), peak_gpu_mib(device)

    name = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} {args.size}px batch {args.batch}, {engine['images']} images timed, {name}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for label, r in (("engine", engine), ("baseline", baseline)):
        gpu = "" if r["peak_gpu_mib"] is None else f", peak GPU {r['peak_gpu_mib']:.0f} MiB"
        print(f"  {label:8s} {r['images_per_second']:9.1f} img/s  (peak host {r['peak_host_mib']:.0f} MiB{gpu})")
    print(f"  ratio engine/baseline: {engine['images_per_second'] / baseline['images_per_second']:.2f}x")
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": name,
                      "engine": engine, "baseline": baseline}))


if __name__ == "__main__":
    main()
