"""`run_audit`: fidelity, diversity and memorisation of a synthetic set against the real training split.

Writes into OUT:

    quality.json              the dict returned by run_audit (structure below)
    per_class_metrics.csv     one row per feature space x class (or "all") x comparison
    diversity.csv             mean pairwise MS-SSIM per class, synthetic and real
    nearest_neighbours.csv    per synthetic image: nearest training image by pixels and by each feature space
    worst_pairs.png           the synthetic images most correlated with a training image, above that image
    config.yaml               the resolved AuditConfig
    features/<space>.npz      cached features (a rerun with the same images and settings reuses them)

quality.json:

    {"feature_spaces": {space: {
         "overall":   M,                      synthetic vs train, all classes pooled
         "per_class": {class: M},             synthetic vs train of that class
         "real_vs_real": {                    the calibration: what "close" means for real images
             "overall": M, "per_class": {class: M},           train half A vs train half B (patient-disjoint)
             "synthetic_vs_half": {"overall": M, "per_class": {class: M}}}}},   synthetic vs half A
                 (half B and the synthetic set are subsampled to the same n, so the two are directly comparable)
     "diversity": {"image_size": int, "per_class": {class: {"synthetic": D, "real": D}}},
     "memorisation": {"pixel": {...}, "features": {space: {...}}, "img2img": {...} | null,
                      "patients_reproduced": [...], "worst_pairs": [...]},
     "classes": [...], "counts": {"train": {class: n}, "train_searched": n, "heldout": n, "synthetic": {class: n}},
     "warnings": ["..."]}

    M = {"n_real", "n_synthetic", "dim", "fd", "fd_ci", "kid", "kid_ci", "precision", "recall", "density",
         "coverage", "notes": [...]}   (a metric a set is too small for is absent and explained in notes;
                                        a class without synthetic images has only the counts and a note)
    D = {"msssim", "msssim_ci", "n_pairs"}   (higher = images more alike = less diverse)

Intervals (fd_ci, kid_ci, msssim_ci) are bootstraps over images, resampling real training images by patient.
Lower FD/KID is closer. FD, KID's spread and coverage all depend on sample size, so judge synthetic images by
real_vs_real.synthetic_vs_half against real_vs_real (same reference, same n), not by the raw `overall` value. Precision/recall/density/coverage near 1 for sets from one distribution.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mrisynth.config import save_config
from mrisynth.data.cache import ImageCache, load_cache
from mrisynth.data.manifest import load_manifest, require_source
from mrisynth.errors import UserError
from mrisynth.files import atomic_path, ensure_writable_dir, sha256_array, write_csv, write_json
from mrisynth.quality.distances import DistanceConfig, compare_sets
from mrisynth.quality.diversity import mean_pairwise_msssim
from mrisynth.quality.features import FeatureSpace, build_feature_spaces
from mrisynth.quality.memorisation import MemorisationConfig, run_memorisation, save_pairs_grid
from mrisynth.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AuditConfig:
    """Settings of `mrisynth audit`."""

    image_size: int = 128  # images are read from the packed cache at this size
    feature_spaces: list[str] = dataclasses.field(default_factory=lambda: ["stats", "classifier"])
    inception_weights: str = ""  # torchvision inception_v3 state dict (.pth)
    dinov2_dir: str = ""  # transformers DINOv2 folder (save_pretrained layout)
    radimagenet_weights: str = ""  # torchvision-layout ResNet50 state dict
    # Images per class and set entering the audit (synthetic; train for fidelity and diversity); 0 = all.
    # The memorisation search always covers every training image: a copy of an uncapped one must not escape.
    max_per_class: int = 1000
    diversity_pairs: int = 500  # random pairs per class for MS-SSIM
    seed: int = 0
    distances: DistanceConfig = dataclasses.field(default_factory=DistanceConfig)
    memorisation: MemorisationConfig = dataclasses.field(default_factory=MemorisationConfig)


def run_audit(
    cfg: AuditConfig,
    *,
    real_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    classifier_dir: str | os.PathLike | None = None,
) -> dict:
    """Audit `synthetic_dir` against the train split of the prepared data folder `real_dir`; see the module doc."""
    require_source(load_manifest(real_dir), "real", where=str(real_dir))  # before any output: nothing half-written
    require_source(load_manifest(synthetic_dir), "synthetic", where=str(synthetic_dir))
    out = ensure_writable_dir(out_dir)
    save_config(cfg, out / "config.yaml")
    seed_everything(cfg.seed)
    rng = np.random.default_rng(derive_seed("audit", cfg.seed))
    real = load_cache(real_dir, cfg.image_size)
    syn = load_cache(synthetic_dir, cfg.image_size)
    classes = list(real.classes)
    unknown = sorted({r.class_name for r in syn.records} - set(classes))
    if unknown:
        raise UserError(f"synthetic class(es) {', '.join(unknown)} are not classes of {real_dir} "
                        f"({', '.join(classes)}); audit a synthetic set made from this data")
    warnings: list[str] = []
    sel = _select_rows(real, syn, cfg, rng=rng, warnings=warnings)
    if len(sel.syn) == 0:
        raise UserError(f"{synthetic_dir} holds no images; generate a synthetic set first")
    train_all_images = np.asarray(real.images[sel.train_all])  # (T_all, S, S) uint8
    train_images = train_all_images[sel.train_pos]  # (T, S, S) uint8, the capped reference
    syn_images = np.asarray(syn.images[sel.syn])  # (F, S, S) uint8
    heldout_images = np.asarray(real.images[sel.heldout])
    train_labels = real.labels[sel.train]
    # Patients of the capped training rows: the intervals resample real images patient by patient.
    train_groups = np.array([real.records[i].patient_id or f"image:{real.records[i].id}" for i in sel.train])

    spaces, space_warnings = build_feature_spaces(
        cfg.feature_spaces, classifier_dir=classifier_dir, inception_weights=cfg.inception_weights,
        dinov2_dir=cfg.dinov2_dir, radimagenet_weights=cfg.radimagenet_weights)
    warnings += space_warnings

    result: dict = {"classes": classes, "feature_spaces": {}, "counts": {
        "train": {c: int((train_labels == k).sum()) for k, c in enumerate(classes)},
        "train_searched": int(len(sel.train_all)), "heldout": int(len(sel.heldout)),
        "synthetic": {c: int((sel.syn_labels == k).sum()) for k, c in enumerate(classes)}}}
    feature_sets: dict[str, dict[str, np.ndarray]] = {}
    metric_rows: list[dict] = []
    for space in tqdm(spaces, desc="feature spaces", leave=False):
        feats = _embed_all(space, out, cfg, train=train_all_images, synthetic=syn_images, heldout=heldout_images)
        feature_sets[space.name] = feats
        result["feature_spaces"][space.name] = _space_metrics(
            space.name, {**feats, "train": feats["train"][sel.train_pos]}, classes, train_labels=train_labels,
            train_groups=train_groups, syn_labels=sel.syn_labels, a_pos=sel.half_a, b_pos=sel.half_b, cfg=cfg, rng=rng, rows=metric_rows,
            warnings=warnings)

    result["diversity"] = {"image_size": cfg.image_size, "per_class": {
        c: {"synthetic": mean_pairwise_msssim(syn_images[sel.syn_labels == k], n_pairs=cfg.diversity_pairs,
                                              rng=rng),
            "real": mean_pairwise_msssim(train_images[train_labels == k], n_pairs=cfg.diversity_pairs, rng=rng,
                                         groups=train_groups[train_labels == k])}
        for k, c in enumerate(classes)}}

    syn_records = [syn.records[i] for i in sel.syn]
    train_records = [real.records[i] for i in sel.train_all]
    memo, nn_rows, worst = run_memorisation(
        synthetic=syn_images, synthetic_records=syn_records, train=train_all_images, train_records=train_records,
        heldout=heldout_images, all_real_records=real.records, features=feature_sets, cfg=cfg.memorisation)
    warnings += memo.pop("warnings")
    result["memorisation"] = memo
    result["warnings"] = warnings

    write_csv(out / "per_class_metrics.csv", metric_rows)
    write_csv(out / "diversity.csv", [
        {"class": c, "set": s, **{k: v for k, v in d.items() if k != "msssim_ci"},
         "msssim_lo": (d["msssim_ci"] or [None])[0], "msssim_hi": (d["msssim_ci"] or [None, None])[1]}
        for c, sets in result["diversity"]["per_class"].items() for s, d in sets.items()])
    write_csv(out / "nearest_neighbours.csv", nn_rows)
    save_pairs_grid(worst, syn_images, train_all_images, out / "worst_pairs.png",
                    synthetic_ids=[r.id for r in syn_records], train_ids=[r.id for r in train_records])
    write_json(out / "quality.json", result)
    for w in warnings:
        log.warning("%s", w)
    return result


@dataclasses.dataclass
class _Rows:
    """Which cache rows the audit uses (all arrays in class order)."""

    train_all: np.ndarray  # every training row: the memorisation search space
    train: np.ndarray  # training rows capped per class: the fidelity and diversity reference
    train_pos: np.ndarray  # where each `train` row sits in `train_all`
    half_a: np.ndarray  # positions in `train` of the two patient-disjoint halves (real-vs-real calibration)
    half_b: np.ndarray
    syn: np.ndarray  # synthetic rows capped per class
    syn_labels: np.ndarray  # their labels in the real class order
    heldout: np.ndarray  # val rows: the real reference for "near"


def _select_rows(real: ImageCache, syn: ImageCache, cfg: AuditConfig, *, rng: np.random.Generator,
                 warnings: list[str]) -> _Rows:
    train_rows = real.indices("train")
    if len(train_rows) == 0:
        raise UserError("the real data has no train split; run `mrisynth data prepare` (which splits) first")
    heldout = real.indices("val")
    if len(heldout) == 0:
        warnings.append("no val split: the held-out real reference for memorisation is missing")
    classes = list(real.classes)
    train_all_by_class = [_of_class(real, train_rows, c) for c in classes]
    train_by_class = [_cap(rows, cfg.max_per_class, rng) for rows in train_all_by_class]
    syn_by_class = [_cap(_of_class(syn, syn.indices(), c), cfg.max_per_class, rng) for c in classes]
    for c, rows in zip(classes, syn_by_class):
        if len(rows) == 0:
            warnings.append(f"class '{c}' has no synthetic images: it has no fidelity or diversity figures")
    train_all, train = np.concatenate(train_all_by_class), np.concatenate(train_by_class)
    half_a, half_b = patient_halves(real, train, rng)
    # Synthetic labels follow the synthetic set's classes.json; the real class order is by name.
    syn_labels = np.concatenate([np.full(len(rows), k, dtype=np.int64) for k, rows in enumerate(syn_by_class)])
    return _Rows(train_all=train_all, train=train, train_pos=_positions(train_all, train),
                 half_a=_positions(train, half_a), half_b=_positions(train, half_b),
                 syn=np.concatenate(syn_by_class), syn_labels=syn_labels, heldout=heldout)


def _of_class(cache: ImageCache, rows: np.ndarray, class_name: str) -> np.ndarray:
    return np.array([i for i in rows if cache.records[i].class_name == class_name], dtype=np.int64)


def _positions(rows: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Where each element of `subset` sits in `rows`."""
    where = {int(v): k for k, v in enumerate(rows)}
    return np.array([where[int(v)] for v in subset], dtype=np.int64)


def _cap(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most `limit` rows (a seeded random subset, kept in manifest order); all when limit is 0."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    return np.sort(rng.choice(rows, limit, replace=False))


def patient_halves(cache: ImageCache, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into two halves with no patient in both, balanced per class.

    Adjacent slices of one patient are near-duplicates: halves sharing patients would look closer than any
    two independent real samples, and the baseline would set the bar too low.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i in rows:
        rec = cache.records[int(i)]
        groups.setdefault((rec.class_name, rec.patient_id or f"image:{rec.id}"), []).append(int(i))
    halves: tuple[list[int], list[int]] = ([], [])
    sizes: dict[tuple[str, int], int] = {}
    keys = list(groups)
    for k in rng.permutation(len(keys)):
        class_name, _ = keys[k]
        side = 0 if sizes.get((class_name, 0), 0) <= sizes.get((class_name, 1), 0) else 1
        halves[side].extend(groups[keys[k]])
        sizes[(class_name, side)] = sizes.get((class_name, side), 0) + len(groups[keys[k]])
    return np.array(sorted(halves[0]), dtype=np.int64), np.array(sorted(halves[1]), dtype=np.int64)


def _embed_all(
    space: FeatureSpace, out: Path, cfg: AuditConfig, *, train: np.ndarray, synthetic: np.ndarray,
    heldout: np.ndarray,
) -> dict[str, np.ndarray]:
    """Features of the three image sets, reusing OUT/features/<space>.npz when it holds the same images."""
    path = out / "features" / f"{space.name}.npz"
    # Keyed on the pixels, not the ids: synthetic ids (syn-<class>-NNNNNN) repeat from one synthetic set to
    # the next, so a second set audited into the same OUT would otherwise get the first set's features.
    key = repr((space.name, space.source, cfg.image_size,
                {name: sha256_array(images) for name, images in
                 (("train", train), ("synthetic", synthetic), ("heldout", heldout))}))
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                log.info("reusing cached %s features from %s", space.name, path)
                return _standardise(space, {k: cached[k] for k in ("train", "synthetic", "heldout")})
    feats = {"train": space.embed(train), "synthetic": space.embed(synthetic),
             "heldout": space.embed(heldout) if len(heldout) else np.zeros((0, 1))}
    path.parent.mkdir(exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), **feats)
    return _standardise(space, feats)


def _standardise(space: FeatureSpace, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """z-score every set with the training set's mean and SD (for spaces with mixed units)."""
    if not space.standardize:
        return feats
    mean, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-8
    return {k: (v - mean) / sd if v.shape[1] == len(mean) else v for k, v in feats.items()}


def _space_metrics(
    name: str, feats: dict[str, np.ndarray], classes: list[str], *, train_labels: np.ndarray,
    train_groups: np.ndarray, syn_labels: np.ndarray, a_pos: np.ndarray, b_pos: np.ndarray, cfg: AuditConfig, rng: np.random.Generator,
    rows: list[dict], warnings: list[str],
) -> dict:
    """Synthetic-vs-train and the real-vs-real calibration, overall and per class, in one feature space."""
    train, syn = feats["train"], feats["synthetic"]
    notes: dict[str, list[str]] = {}  # note -> where it applies, so each becomes one warning

    def compare(real: tuple[np.ndarray, np.ndarray], fake: tuple[np.ndarray, np.ndarray | None], *, cls: str,
                comparison: str) -> dict:
        """real and fake as (features, patient of each row or None)."""
        m = compare_sets(real[0], fake[0], cfg.distances, rng=rng, real_groups=real[1], fake_groups=fake[1])
        if len(fake[0]) == 0:
            m["notes"].append("no synthetic images in this class")
        for note in m["notes"]:
            notes.setdefault(note, []).append(f"{cls}/{comparison}")
        rows.append({"space": name, "class": cls, "comparison": comparison,
                     **{k: _flat(v) for k, v in m.items() if k not in ("fd_ci", "kid_ci", "notes")},
                     "fd_lo": _ci(m, "fd_ci", 0), "fd_hi": _ci(m, "fd_ci", 1),
                     "kid_lo": _ci(m, "kid_ci", 0), "kid_hi": _ci(m, "kid_ci", 1)})
        return m

    def subsample(x: tuple[np.ndarray, np.ndarray | None], n: int) -> tuple[np.ndarray, np.ndarray | None]:
        if len(x[0]) <= n:
            return x
        keep = np.sort(rng.choice(len(x[0]), n, replace=False))
        return x[0][keep], None if x[1] is None else x[1][keep]

    def calibrate(half_a: tuple, half_b: tuple, fake: tuple, cls: str) -> tuple[dict, dict]:
        # Half B and the synthetic set at one size n: the two comparisons with half A differ only in the images.
        n = min(len(half_b[0]), len(fake[0])) or len(half_b[0])
        return (compare(half_a, subsample(half_b, n), cls=cls, comparison="real_half_vs_half"),
                compare(half_a, subsample(fake, n), cls=cls, comparison="synthetic_vs_half"))

    def real_rows(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return train[mask], train_groups[mask]

    in_a, in_b = np.zeros(len(train), bool), np.zeros(len(train), bool)
    in_a[a_pos], in_b[b_pos] = True, True
    result: dict = {"overall": compare((train, train_groups), (syn, None), cls="all", comparison="synthetic_vs_train"),
                    "per_class": {}}
    rvr: dict = {"per_class": {}, "synthetic_vs_half": {"per_class": {}}}
    rvr["overall"], rvr["synthetic_vs_half"]["overall"] = calibrate(real_rows(in_a), real_rows(in_b), (syn, None),
                                                                    "all")
    for k, c in enumerate(classes):
        of_class, syn_c = train_labels == k, (syn[syn_labels == k], None)
        result["per_class"][c] = compare(real_rows(of_class), syn_c, cls=c, comparison="synthetic_vs_train")
        rvr["per_class"][c], rvr["synthetic_vs_half"]["per_class"][c] = calibrate(
            real_rows(in_a & of_class), real_rows(in_b & of_class), syn_c, c)
    result["real_vs_real"] = rvr
    for note, where in notes.items():
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        warnings.append(f"feature space '{name}': {note} (in {shown})")
    return result


def _flat(value: object) -> object:
    return round(value, 6) if isinstance(value, float) else value


def _ci(metrics: dict, key: str, side: int) -> float | None:
    ci = metrics.get(key)
    return round(ci[side], 6) if ci else None
