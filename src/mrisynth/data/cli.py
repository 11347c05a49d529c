"""`mrisynth data prepare|audit|download|cache|phantom`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from mrisynth.cliutil import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="ingest, split, audit, download and cache image data")
    subs = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    prepare = subs.add_parser("prepare", help="read a source (.mat files or image folders) and write a manifest")
    prepare.add_argument("source", help="a folder of Figshare .mat files, or of <class>/ or <split>/<class>/ images")
    prepare.add_argument("--out", required=True, help="folder for manifest.csv, classes.json, config.yaml")
    prepare.add_argument("--split", default=None,
                         help="auto (default) | seed | patient | folds | keep | file:PATH (a CSV with id,split)")
    prepare.add_argument("--seed", type=int, default=None, help="seed of the split (default 42)")
    prepare.add_argument("--group-trailing-letter", action="store_true", default=None,
                         help="treat patient ids differing only in a final letter (MR024780B/E) as one person")
    prepare.add_argument("--metadata", default=None, help="CSV joined by id (id, patient_id, fold, split, class)")
    add_config_args(prepare)
    prepare.set_defaults(func=_prepare)

    audit = subs.add_parser("audit", help="find leakage: patients spanning splits, near-duplicates across splits")
    audit.add_argument("data_dir", help="a prepared data folder")
    audit.add_argument("--out", default=None, help="folder for the audit files (default DATA_DIR/audit)")
    audit.add_argument("--threshold", type=float, default=None, help="thumbnail correlation of a near-duplicate")
    audit.add_argument("--group-trailing-letter", action="store_true", help="count MR024780B/E as one patient")
    audit.set_defaults(func=_audit)

    download = subs.add_parser("download", help="download a public data set")
    download.add_argument("dataset", choices=("figshare",))
    download.add_argument("--out", required=True, help="folder for the archives and extracted files")
    download.add_argument("--base-url", default=None, help="a mirror holding the same file names")
    download.set_defaults(func=_download)

    cache = subs.add_parser("cache", help="pack a prepared data folder's images into a uint8 array")
    cache.add_argument("data_dir", help="a prepared data folder")
    cache.add_argument("--size", type=int, required=True, help="square side in pixels")
    cache.add_argument("--fit", choices=("resize", "letterbox"), default="resize",
                       help="stretch to the square (resize) or keep aspect and pad (letterbox)")
    cache.set_defaults(func=_cache)

    phantom = subs.add_parser(
        "phantom", help="write a built-in digital phantom data set (MRI-like slices, patients, tumour masks)"
    )
    phantom.add_argument("--out", required=True, help="output folder (replaced if it holds an earlier phantom)")
    phantom.add_argument("--patients", type=int, default=None, help="number of patients (default 60)")
    phantom.add_argument("--slices-per-patient", type=int, default=None, help="slices per patient (default 8)")
    phantom.add_argument("--size", type=int, default=None, help="image size in pixels (default 256)")
    phantom.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    phantom.add_argument("--difficulty", type=float, default=None, help="0 = obvious .. 1 = hard (default 0.5)")
    phantom.add_argument("--site", default=None,
                         help="scanner: A (default) or B, another hospital's, for an external test set")
    add_config_args(phantom)
    phantom.set_defaults(func=_phantom)


def _prepare(args: argparse.Namespace) -> int:
    from mrisynth.data.manifest import load_manifest, split_summary
    from mrisynth.data.prepare import PrepareConfig, format_summary, run_prepare

    # Flags given on the command line win over --config and --set.
    flags = {"split": args.split, "seed": args.seed, "group_trailing_letter": args.group_trailing_letter,
             "metadata": args.metadata}
    cfg = config_from_args(PrepareConfig, args)
    for key, value in flags.items():
        if value is not None:
            setattr(cfg, key, value)
    out = run_prepare(args.source, args.out, cfg)
    records = load_manifest(out)
    print(f"{len(records)} images, {len({r.patient_id for r in records if r.patient_id})} patients -> "
          f"{out / 'manifest.csv'}")
    print(format_summary(split_summary(records)))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from mrisynth.data.audit import DEFAULT_THRESHOLD, run_leakage_audit

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    report = run_leakage_audit(args.data_dir, args.out, threshold=threshold,
                               group_trailing_letter=args.group_trailing_letter)
    print(f"patients spanning splits: {report['patients_across_splits']} of {report['patients']}")
    print(f"near-duplicate pairs across splits (r >= {threshold}): {report['near_duplicate_pairs']} "
          f"{json.dumps(report['near_duplicate_pairs_by_splits'])}, "
          f"{report['near_duplicate_pairs_same_patient']} of them within one patient")
    print(f"held-out images with a near-duplicate in train: "
          f"{json.dumps(report['heldout_images_with_train_duplicate'])}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from mrisynth.data.download import run_download_figshare

    out = run_download_figshare(args.out, base_url=args.base_url)
    print(f"downloaded and extracted to {out}; next: mrisynth data prepare {out} --out DATA_DIR --split patient")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from mrisynth.data.cache import build_cache, load_cache

    start = time.perf_counter()
    out = build_cache(args.data_dir, args.size, fit=args.fit)
    built = time.perf_counter() - start
    start = time.perf_counter()
    cache = load_cache(args.data_dir, args.size, fit=args.fit, build=False)
    loaded = time.perf_counter() - start
    print(f"{len(cache)} images at {args.size} px ({cache.images.nbytes / 2**20:.0f} MiB) in {out}: "
          f"built in {built:.1f} s, loads in {loaded:.2f} s")
    return 0


def _phantom(args: argparse.Namespace) -> int:
    from mrisynth.data.phantom import PhantomConfig, run_phantom

    flags = {"patients": args.patients, "slices_per_patient": args.slices_per_patient, "size": args.size,
             "seed": args.seed, "difficulty": args.difficulty, "site": args.site}
    cfg = config_from_args(PhantomConfig, args)
    # Explicit flags win over --config / --set.
    cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    out = run_phantom(cfg, args.out)
    n = cfg.patients * cfg.slices_per_patient
    print(f"phantom written to {out}: {cfg.patients} patients, {n} slices of {cfg.size}x{cfg.size}")
    return 0
