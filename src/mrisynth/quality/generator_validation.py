"""The standard scorer for validation while a generator trains (see mrisynth.generate.validation).

It lives here, above `generate/`, because it needs the quality layer's feature space and distances; the generator
trainers only accept a callable, and the CLI (`mrisynth generator train`) and the study pass this one in.

    validate = build_generator_validation("runs/a/data", image_size=64)
    validate(images, labels)  # (N, S, S) uint8, (N,) int64 ->
    {"val_fd": ..., "val_kid": ..., "val_tstr_acc": ...}

- val_fd, val_kid: Frechet distance and unbiased KID (MMD^2, cubic kernel) between the draw and the real
  *validation* slices, in the weight-free `stats` feature space, z-scored with the real validation statistics.
  Lower is better. With tens of images they are noisy, biased estimates: compare them along one run, not across runs.
- val_tstr_acc: "TSTR-lite": a multinomial logistic regression trained once on the real *train* slices' stats
  features, scoring the draw against the labels it was generated for. Higher is better: the images carry their class.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from mrisynth.data.cache import load_cache
from mrisynth.errors import UserError
from mrisynth.generate.validation import ValidationFn
from mrisynth.quality.distances import frechet_distance, mmd2_unbiased
from mrisynth.quality.features import stats_features

log = logging.getLogger(__name__)


def build_generator_validation(
    data_dir: str | os.PathLike, *, image_size: int, fit: str = "resize", seed: int = 0,
    max_real_per_class: int = 256,
) -> ValidationFn:
    """A ValidationFn comparing generated images with the real slices of `data_dir` at `image_size`."""
    cache = load_cache(data_dir, image_size, fit=fit)
    rng = np.random.default_rng(seed)
    val = _per_class_rows(cache, "val", max_real_per_class, rng)
    train = _per_class_rows(cache, "train", max_real_per_class, rng)
    if len(val) < 2 or len(train) < 2:
        raise UserError(f"{data_dir} needs at least 2 validation and 2 train images to validate a generator "
                        "while it trains; prepare it with a val split, or set val_every=0")
    real = stats_features(cache.images[val])
    mean, std = real.mean(0), real.std(0) + 1e-8  # z-score: the stats dimensions have unrelated units
    real_z = (real - mean) / std
    classifier = fit_softmax_regression((stats_features(cache.images[train]) - mean) / std, cache.labels[train],
                                        n_classes=len(cache.classes), seed=seed)
    log.info("generator validation: %d real val slices, classifier trained on %d train slices", len(val), len(train))

    def validate(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        fake_z = (stats_features(images) - mean) / std
        return {
            "val_fd": frechet_distance(real_z, fake_z),
            "val_kid": mmd2_unbiased(real_z, fake_z),
            "val_tstr_acc": float((classifier(fake_z) == np.asarray(labels)).mean()),
        }

    return validate


def _per_class_rows(cache, split: str, limit: int, rng: np.random.Generator) -> np.ndarray:
    rows = cache.indices(split)
    picked = []
    for label in range(len(cache.classes)):
        mine = rows[cache.labels[rows] == label]
        picked.append(mine if len(mine) <= limit else np.sort(rng.choice(mine, limit, replace=False)))
    return np.concatenate(picked) if picked else rows


def fit_softmax_regression(x: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int = 0, l2: float = 1e-2,
                           iters: int = 200):
    """Multinomial logistic regression (full-batch L-BFGS, L2-penalised); returns predict(x) -> labels."""
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_, b_ = w.detach(), b.detach()

    def predict(features: np.ndarray) -> np.ndarray:
        return (torch.as_tensor(features, dtype=torch.float64) @ w_ + b_).argmax(1).numpy()

    return predict
