"""Applying a trained classifier to new images: `run_evaluate` (a labelled set) and `run_predict` (no labels).

    run_evaluate("runs/x/clf", "other_hospital/", out="runs/x/clf/external/other_hospital")
    run_predict("runs/x/clf", ["scans/", "one.png"], "predictions.csv")

Images go through the training run's preprocessing exactly, read from RUN/config.yaml: decoded to grey (a grey
image stored as RGB is accepted, a coloured one refused), fitted to the run's square size with the run's `fit`
(`resize` squashes a non-square image, `letterbox` keeps its aspect and pads black), normalised with the run's
`normalize`, then x / 255. Classes are matched by name, with the aliases `data prepare` accepts
(`glioma_tumor`, `Glioma Tumour` -> glioma). `run_evaluate` writes:

    OUT/metrics.json      accuracy, macro/weighted P/R/F1, MCC, AUC, per class, confusion; plus what was evaluated
    OUT/predictions.csv   one row per image: id, path, true_class, pred_class, prob_<class>...

Everything is read and scored before anything is written, so a refused input leaves no output behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mrisynth.classify.augment import to_unit_float
from mrisynth.classify.checkpoint import load_classifier
from mrisynth.classify.config import ClassifierConfig
from mrisynth.classify.metrics import classification_metrics
from mrisynth.config import from_dict
from mrisynth.data.images import IMAGE_SUFFIXES, Fit, fit_square, read_grayscale
from mrisynth.data.manifest import MANIFEST_NAME, load_manifest
from mrisynth.data.normalize import normalize_images, parse_normalization
from mrisynth.data.sources import normalise_class_name, read_image_tree
from mrisynth.devices import resolve_device
from mrisynth.errors import UserError
from mrisynth.files import write_csv, write_json

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.csv"
EXTERNAL_DIR = "external"  # default OUT: RUN/external/<name of the data folder>


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What a trained classifier's inputs went through, from its run's config.yaml."""

    image_size: int
    fit: Fit
    normalize: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainedClassifier:
    """A trained run ready for inference: the model (eval mode, on `device`), its classes and preprocessing."""

    run_dir: Path
    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    batch_size: int
    device: torch.device


@dataclasses.dataclass
class LabelledImages:
    """The images of a labelled set the classifier can score, with labels in the classifier's class order."""

    ids: list[str]
    paths: list[str]
    labels: np.ndarray  # (N,) int64
    excluded: dict[str, int]  # classes the classifier does not know -> images left out


def load_trained(run_dir: str | os.PathLike, *, device: str = "auto") -> TrainedClassifier:
    """Rebuild the run's model with its best weights (safetensors) and read its preprocessing."""
    model, info = load_classifier(run_dir)
    cfg = from_dict(ClassifierConfig, info["config"].get("classifier"), where="classifier.")
    prep = Preprocessing(image_size=cfg.image_size, fit=cfg.fit, normalize=parse_normalization(cfg.normalize).spec)
    target = resolve_device(device)
    return TrainedClassifier(run_dir=Path(run_dir), model=model.to(target), classes=list(info["classes"]),
                             preprocessing=prep, batch_size=cfg.eval_batch_size, device=target)


def read_images(paths: Sequence[str | os.PathLike], prep: Preprocessing) -> np.ndarray:
    """(N, S, S) uint8 model inputs: each file decoded, fitted and normalised as the training cache was."""
    shapes: list[tuple[int, int]] = [(0, 0)] * len(paths)
    out = np.zeros((len(paths), prep.image_size, prep.image_size), dtype=np.uint8)

    def load_one(i: int) -> None:
        image = read_grayscale(paths[i])
        shapes[i] = image.shape
        out[i] = fit_square(image, prep.image_size, fit=prep.fit)  # the training cache's exact call

    # Threads suffice: PIL releases the GIL while decoding and resizing.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(load_one, range(len(paths))), total=len(paths), desc="read images", leave=False))
    non_square = sum(h != w for h, w in shapes)
    if non_square:
        how = "squashed to the square" if prep.fit == "resize" else "letterboxed (aspect kept, padded black)"
        log.warning("%d of %d images are not square: %s at %d px, as the classifier's training images were "
                    "(its fit: %s)", non_square, len(paths), how, prep.image_size, prep.fit)
    return normalize_images(out, prep.normalize)


@torch.no_grad()
def predict_probs(clf: TrainedClassifier, images_u8: np.ndarray) -> np.ndarray:
    """(N, C) float64 class probabilities of (N, S, S) uint8 inputs, without augmentation."""
    probs = []
    for first in range(0, len(images_u8), clf.batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images_u8[first:first + clf.batch_size]))
        x = to_unit_float(batch.unsqueeze(1).to(clf.device))  # (B, 1, S, S) in [0, 1]
        probs.append(torch.softmax(clf.model(x).float(), dim=1).cpu())
    if not probs:
        return np.zeros((0, len(clf.classes)))
    return torch.cat(probs).double().numpy()


def find_labelled_images(
    data_dir: str | os.PathLike,
    classes: Sequence[str],
    *,
    split: str | None = None,
    exclude_unknown: bool = False,
) -> LabelledImages:
    """The images of a prepared folder (manifest.csv) or an image tree, labelled by class name.

    A class the classifier does not know is a UserError, or with `exclude_unknown` left out (and counted).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"--data {data_dir} is not a folder; give a prepared data folder or <class>/<image> folders")
    prepared = (data_dir / MANIFEST_NAME).is_file()
    records = load_manifest(data_dir) if prepared else read_image_tree(data_dir).records
    if split is not None:
        records = [r for r in records if r.split == split]
        if not records:
            raise UserError(f"{data_dir} has no images in split '{split}'; drop --split to use all of them")
    index = {normalise_class_name(c): k for k, c in enumerate(classes)}
    unknown = Counter(normalise_class_name(r.class_name) for r in records
                      if normalise_class_name(r.class_name) not in index)
    if unknown and not exclude_unknown:
        listed = ", ".join(f"{name} ({n} images)" for name, n in sorted(unknown.items()))
        raise UserError(f"{data_dir} has class(es) the classifier does not know: {listed}; it knows "
                        f"{', '.join(classes)}. Rename those folders, or pass --exclude-unknown to leave them out")
    kept = [r for r in records if normalise_class_name(r.class_name) in index]
    if not kept:
        raise UserError(f"no image of {data_dir} belongs to a class the classifier knows ({', '.join(classes)})")
    if unknown:
        log.warning("left out %d image(s) of unknown class(es): %s", sum(unknown.values()), dict(sorted(unknown.items())))
    return LabelledImages(
        ids=[r.id for r in kept], paths=[r.path for r in kept],
        labels=np.array([index[normalise_class_name(r.class_name)] for r in kept], dtype=np.int64),
        excluded=dict(sorted(unknown.items())),
    )


def run_evaluate(
    run_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    split: str | None = None,
    exclude_unknown: bool = False,
    device: str = "auto",
) -> dict:
    """Score a trained classifier on a labelled set; write OUT/metrics.json and OUT/predictions.csv.

    OUT defaults to RUN/external/<name of DATA_DIR>. Returns the metrics.json content.
    """
    clf = load_trained(run_dir, device=device)
    data_dir = Path(data_dir)
    found = find_labelled_images(data_dir, clf.classes, split=split, exclude_unknown=exclude_unknown)
    probs = predict_probs(clf, read_images(found.paths, clf.preprocessing))
    metrics = classification_metrics(found.labels, probs, clf.classes)
    metrics.update({
        "run": str(Path(run_dir).resolve()), "data": str(data_dir.resolve()), "split": split,
        "excluded": found.excluded, "preprocessing": clf.preprocessing.as_dict(),
    })
    out_dir = Path(out) if out is not None else default_out(run_dir, data_dir)
    rows = _prediction_rows(found.ids, found.paths, probs, clf.classes)
    for row, label in zip(rows, found.labels.tolist()):
        row["true_class"] = clf.classes[label]
    write_csv(out_dir / PREDICTIONS_NAME, rows, columns=_columns(clf.classes, labelled=True))
    write_json(out_dir / METRICS_NAME, metrics)
    log.info("evaluated %s on %d images of %s: accuracy %.4f", run_dir, len(found.ids), data_dir, metrics["accuracy"])
    return metrics


def default_out(run_dir: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Where `run_evaluate` writes without --out: RUN/external/<name of DATA_DIR>."""
    return Path(run_dir) / EXTERNAL_DIR / Path(data_dir).resolve().name


def run_predict(
    run_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    *,
    device: str = "auto",
) -> int:
    """Predict the class of every image file in `paths` (files or folders, searched recursively) into `out_csv`.

    Returns the number of rows written (one per image).
    """
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise UserError(f"--out {out_csv} is a folder; give a CSV file name, e.g. {out_csv / 'predictions.csv'}")
    files = collect_image_files(paths)
    clf = load_trained(run_dir, device=device)
    probs = predict_probs(clf, read_images(files, clf.preprocessing))
    rows = _prediction_rows([Path(p).stem for p in files], files, probs, clf.classes)
    write_csv(out_csv, rows, columns=_columns(clf.classes, labelled=False))
    log.info("predicted %d images with %s -> %s", len(rows), run_dir, out_csv)
    return len(rows)


def collect_image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named directly or found (recursively, hidden files skipped) in folders, sorted, no repeats."""
    if not paths:
        raise UserError("give at least one image file or folder to predict")
    found: dict[str, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            if not inside:
                raise UserError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.update((str(p.resolve()), None) for p in inside)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{path} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
            found[str(path.resolve())] = None
        else:
            raise UserError(f"{path} does not exist; give image files or folders of images")
    return list(found)


def _columns(classes: Sequence[str], *, labelled: bool) -> list[str]:
    return ["id", "path", *(["true_class"] if labelled else []), "pred_class", *[f"prob_{c}" for c in classes]]


def _prediction_rows(ids: Sequence[str], paths: Sequence[str], probs: np.ndarray, classes: Sequence[str]) -> list[dict]:
    return [
        {"id": i, "path": str(p), "pred_class": classes[int(row.argmax())],
         **{f"prob_{c}": f"{v:.6f}" for c, v in zip(classes, row)}}
        for i, p, row in zip(ids, paths, probs)
    ]
