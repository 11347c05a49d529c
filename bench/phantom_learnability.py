"""Is the default phantom learnable but not trivial? Held-out-patient accuracy of a small CNN.

    python bench/phantom_learnability.py [--patients 60] [--difficulty 0.5] [--folds 3] [--epochs 20]

Writes a phantom with the default settings (or the given ones), shrinks it to 64 px, then runs patient-level
k-fold cross-validation (every patient in exactly one test fold, class-stratified) of a four-layer CNN in plain
torch on the CPU, and prints the accuracy per fold and overall. Chance is 33%; the default difficulty is tuned
so that this lands clearly above chance and clearly below 100%.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mrisynth.data.phantom import PhantomConfig, run_phantom
from mrisynth.seeding import seed_everything

CLASSES = ("glioma", "meningioma", "pituitary")
SIZE = 64


def load_phantom(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 1, 64, 64) float32 in [0, 1], labels (N,), patient ids (N,)."""
    with open(root / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = [
        np.asarray(Image.open(root / "images" / r["class"] / f"{r['id']}.png").resize((SIZE, SIZE), Image.BOX))
        for r in rows
    ]
    x = np.stack(images)[:, None].astype(np.float32) / 255.0
    y = np.array([CLASSES.index(r["class"]) for r in rows])
    return x, y, np.array([r["patient_id"] for r in rows])


def patient_folds(labels: np.ndarray, patients: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per image: patients dealt round-robin to folds within each class (stratified, disjoint)."""
    rng = np.random.default_rng(seed)
    fold_of = {}
    for c in range(len(CLASSES)):
        ids = sorted(set(patients[labels == c]))
        rng.shuffle(ids)
        fold_of.update({p: i % k for i, p in enumerate(ids)})
    return np.array([fold_of[p] for p in patients])


def build_cnn() -> nn.Module:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    # (B, 1, 64, 64) -> (B, 64, 4, 4) -> (B, 3)
    return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, len(CLASSES)))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flips and shifts of up to 4 px: what a real classifier pipeline would use."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = torch.randint(-4, 5, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train_and_test(x_tr, y_tr, x_te, y_te, *, epochs: int, seed: int) -> float:
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * (len(x_tr) // 32 + 1))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            loss = loss_fn(model(augment(x_tr[idx], gen)), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = model(x_te).argmax(1)
    return float((pred == y_te).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = PhantomConfig()
    parser.add_argument("--patients", type=int, default=defaults.patients)
    parser.add_argument("--slices-per-patient", type=int, default=defaults.slices_per_patient)
    parser.add_argument("--difficulty", type=float, default=defaults.difficulty)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = PhantomConfig(patients=args.patients, slices_per_patient=args.slices_per_patient,
                        difficulty=args.difficulty, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        x, y, patients = load_phantom(run_phantom(cfg, Path(tmp) / "phantom"))
        print(f"phantom: {len(x)} slices, {len(set(patients))} patients, difficulty {cfg.difficulty} "
              f"({time.perf_counter() - t0:.1f} s)")
    folds = patient_folds(y, patients, args.folds, args.seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    accs, t0 = [], time.perf_counter()
    for k in range(args.folds):
        te = folds == k
        assert not set(patients[te]) & set(patients[~te]), "patient leakage"
        acc = train_and_test(x_t[~te], y_t[~te], x_t[te], y_t[te], epochs=args.epochs, seed=args.seed + k)
        accs.append(acc)
        print(f"fold {k}: {te.sum()} held-out slices of {len(set(patients[te]))} patients: accuracy {acc:.1%}")
    print(f"held-out-patient accuracy: {np.mean(accs):.1%} (folds {', '.join(f'{a:.1%}' for a in accs)}; "
          f"chance 33.3%; training {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
