"""`mrisynth classifier train`: train one classifier on a prepared data folder (plus an optional synthetic set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrisynth.classify.config import CLASSIFIER_PRESETS, ClassifierConfig
from mrisynth.classify.data import TrainData
from mrisynth.classify.train import fit
from mrisynth.cliutil import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    clf = subparsers.add_parser("classifier", help="train and evaluate an MRI classifier")
    subs = clf.add_subparsers(dest="classifier_command", metavar="ACTION", required=True)
    train = subs.add_parser("train", help="train on the train split (+ synthetic), select on val, report test")
    train.add_argument("--data", required=True, help="prepared data folder (from `mrisynth data prepare`)")
    train.add_argument("--synthetic", default=None, help="a synthetic set folder to add to the training images")
    train.add_argument("--preset", choices=sorted(CLASSIFIER_PRESETS), default="seed",
                       help="seed: the reference Keras recipe; fast: modern GPU recipe; tiny: seconds on a CPU")
    train.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    add_config_args(train)
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(ClassifierConfig, args, base=CLASSIFIER_PRESETS[args.preset])
    data = TrainData(real_dir=Path(args.data), synthetic_dir=Path(args.synthetic) if args.synthetic else None)
    print(f"classifier {cfg.model} at {cfg.image_size} px, {cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, "
          f"up to {cfg.epochs} epochs -> {args.out}")
    result = fit(cfg, data, Path(args.out))
    test = result["test"]
    print(f"trained on {result['train_real']} real + {result['train_synthetic']} synthetic images, "
          f"{result['epochs_run']} epochs (best {result['best_epoch'] + 1})")
    print(f"test accuracy {test['accuracy']:.4f}  f1_macro {test['f1_macro']:.4f}  mcc {test['mcc']:.4f}  "
          f"auc_ovr {test['auc_ovr'] if test['auc_ovr'] is None else round(test['auc_ovr'], 4)}")
    print(f"val accuracy {result['val']['accuracy']:.4f}; details in {Path(args.out) / 'result.json'}")
    return 0
