"""`mrisynth generator train|sample`: dispatch to the backend named by --backend (train) or generator.json (sample).

Validation while training needs a scorer from `mrisynth.quality`, a layer above this one, so it is injected:
`register(subparsers, build_validation=...)` is called by the top-level CLI with
`mrisynth.quality.generator_validation.build_generator_validation`; without it, `val_every` is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from mrisynth.cliutil import add_config_args, config_from_args
from mrisynth.errors import UserError
from mrisynth.generate import backend_module, read_generator_info


def register(subparsers: argparse._SubParsersAction, *, build_validation: Callable | None = None) -> None:
    """Add `generator train|sample`; `build_validation(data_dir, *, image_size, fit, seed)` -> a ValidationFn."""
    gen = subparsers.add_parser("generator", help="fine-tune or train a generator, then sample a synthetic set")
    subs = gen.add_subparsers(dest="generator_command", metavar="ACTION", required=True)

    train = subs.add_parser("train", help="train a generator on the train split of a prepared data folder")
    train.add_argument("--backend", choices=("sd", "ddpm"), default="ddpm",
                       help="ddpm: trained from scratch, no weights needed (default); sd: fine-tune an SD-family model")
    train.add_argument("--data", required=True, help="prepared data folder (from `mrisynth data prepare`)")
    train.add_argument("--out", required=True, help="folder for the trained generator")
    train.add_argument("--preset", default=None, help="named settings: sd: full|lora|tiny; ddpm: tiny|demo|full")
    train.add_argument("--model", default=None, help="sd only: model id or local folder (default stabilityai/sd-turbo)")
    add_config_args(train)
    train.set_defaults(func=_train, build_validation=build_validation)

    sample = subs.add_parser("sample", help="generate a labelled synthetic set with provenance")
    sample.add_argument("--generator", required=True, help="a folder written by `mrisynth generator train`")
    sample.add_argument("--n-per-class", type=int, required=True,
                        help="images per class (a rerun with more adds images; with fewer, the manifest lists that many)")
    sample.add_argument("--out", required=True, help="folder for PNGs + manifest.csv")
    sample.add_argument("--preset", default=None, help="named settings: sd: finetuned (default)|turbo|seed; ddpm: fast|quality")
    sample.add_argument("--mode", choices=("text2img", "img2img"), default=None, help="sd only")
    add_config_args(sample)
    sample.set_defaults(func=_sample)


def _train(args: argparse.Namespace) -> int:
    backend = backend_module(args.backend)
    if args.model is not None and args.backend != "sd":
        raise UserError("--model applies to --backend sd only")
    cfg = config_from_args(backend.TrainConfig, args)
    if args.model is not None:  # an explicit flag wins over the preset and --config
        cfg = dataclasses.replace(cfg, model=args.model)
    validate = None
    if cfg.val_every and args.build_validation is not None:
        size = cfg.image_size if args.backend == "ddpm" else cfg.size
        validate = args.build_validation(args.data, image_size=size, fit=getattr(cfg, "fit", "resize"),
                                         seed=cfg.seed)
    out = backend.run_train(cfg, data_dir=args.data, out_dir=args.out, validate=validate)
    print(f"generator saved to {out}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    info = read_generator_info(args.generator)
    backend = backend_module(info["backend"])
    if args.n_per_class < 1:
        raise UserError("--n-per-class must be at least 1")
    explicit: dict = {"n_per_class": args.n_per_class}
    if args.mode is not None:
        if info["backend"] != "sd":
            raise UserError("--mode applies to SD generators only")
        explicit["mode"] = args.mode
    # Explicit flags win over the preset and --config (and are checked again by the backend's sampler).
    cfg = dataclasses.replace(config_from_args(backend.SampleConfig, args), **explicit)
    out = backend.run_sample(args.generator, cfg, out_dir=args.out)
    print(f"synthetic set written to {out}")
    return 0
