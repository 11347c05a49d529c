"""`mrisynth classifier train|evaluate|predict`: train one classifier on a prepared data folder (plus an optional
synthetic set); score a trained one on another labelled set; predict the classes of unlabelled images."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrisynth.classify.config import ClassifierConfig
from mrisynth.classify.data import TrainData
from mrisynth.classify.train import fit
from mrisynth.cliutil import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    clf = subparsers.add_parser("classifier", help="train and evaluate an MRI classifier")
    subs = clf.add_subparsers(dest="classifier_command", metavar="ACTION", required=True)
    train = subs.add_parser("train", help="train on the train split (+ synthetic), select on val, report test")
    train.add_argument("--data", required=True, help="prepared data folder (from `mrisynth data prepare`)")
    train.add_argument("--synthetic", default=None, help="a synthetic set folder to add to the training images")
    train.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    # --preset seed (= the defaults): the reference Keras recipe; fast: a modern GPU recipe; tiny: seconds on a CPU
    add_config_args(train, presets_of=ClassifierConfig)
    train.set_defaults(func=_train)

    evaluate = subs.add_parser("evaluate", help="score a trained classifier on another labelled set (e.g. a hospital)")
    evaluate.add_argument("run", metavar="RUN", help="a classifier run folder (from `mrisynth classifier train`)")
    evaluate.add_argument("--data", required=True,
                          help="a prepared data folder, or image folders <class>/<image> (class names as in training)")
    evaluate.add_argument("--out", default=None, help="folder for metrics.json and predictions.csv "
                          "(default RUN/external/<name of DATA>)")
    evaluate.add_argument("--split", default=None, help="score only this split of DATA (default: every image)")
    evaluate.add_argument("--exclude-unknown", action="store_true",
                          help="leave out images of classes the classifier does not know (default: refuse)")
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    evaluate.set_defaults(func=_evaluate)

    predict = subs.add_parser("predict", help="predict the class of images (files or folders), no labels needed")
    predict.add_argument("run", metavar="RUN", help="a classifier run folder (from `mrisynth classifier train`)")
    predict.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--out", required=True, help="CSV file: one row per image (id, path, pred_class, prob_*)")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    predict.set_defaults(func=_predict)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(ClassifierConfig, args)
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


def _evaluate(args: argparse.Namespace) -> int:
    from mrisynth.classify.inference import default_out, run_evaluate

    m = run_evaluate(args.run, args.data, out=args.out, split=args.split, exclude_unknown=args.exclude_unknown,
                     device=args.device)
    excluded = f", {sum(m['excluded'].values())} of unknown classes left out" if m["excluded"] else ""
    print(f"{m['count']} images{excluded}: accuracy {m['accuracy']:.4f}  f1_macro {m['f1_macro']:.4f}  "
          f"f1_weighted {m['f1_weighted']:.4f}  (preprocessing: {m['preprocessing']})")
    for name, row in m["per_class"].items():
        print(f"  {name:>12}: recall {row['recall']:.3f}  precision {row['precision']:.3f}  n={row['support']}")
    print(f"metrics.json and predictions.csv in {args.out or default_out(args.run, args.data)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mrisynth.classify.inference import run_predict

    n = run_predict(args.run, args.paths, args.out, device=args.device)
    print(f"{n} images -> {args.out}")
    return 0
