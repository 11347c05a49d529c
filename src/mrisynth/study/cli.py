"""`mrisynth study run|report|status` and `mrisynth demo`."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from mrisynth.cliutil import add_config_args, config_from_args
from mrisynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser("study", help="run the ratio ladder x seeds study, report it, show its progress")
    subs = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    run = subs.add_parser("run", help="run (or resume) a study into one run directory")
    add_config_args(run, preset_help="a preset (seed, rigorous, demo) or a YAML file of differences")
    run.add_argument("--out", required=True, help="the run directory (rerun the same command to resume)")
    run.add_argument("--shard", default="0/1", help="i/n: run only trials i, i+n, i+2n, ... (job arrays)")
    spread = run.add_mutually_exclusive_group()
    spread.add_argument("--gpus", default=None, help="run one worker per GPU on this machine: 0,1,2,3 or all")
    spread.add_argument("--workers", type=int, default=None, help="run N worker processes on this machine")
    run.set_defaults(func=_run)

    report = subs.add_parser("report", help="write RUN/report/ from whatever trials are done")
    report.add_argument("run_dir", metavar="RUN", help="a run directory written by `mrisynth study run`")
    report.set_defaults(func=_report)

    status = subs.add_parser("status", help="show done / running / failed / pending trials")
    status.add_argument("run_dir", metavar="RUN", help="a run directory written by `mrisynth study run`")
    status.set_defaults(func=_status)

    demo = subparsers.add_parser("demo", help="the whole study on the built-in phantom (no downloads, CPU minutes)")
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.set_defaults(func=_demo)


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' -> (2, 8), with a clear error for anything else."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard expects i/n, e.g. 0/4; got '{text}'") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _run(args: argparse.Namespace) -> int:
    from mrisynth.report import run_report
    from mrisynth.study import StudyConfig, run_study

    cfg = config_from_args(StudyConfig, args)  # validated here, before any worker starts
    if args.gpus is not None or args.workers is not None:
        return _run_workers(args)
    outcome = run_study(cfg, args.out, shard=parse_shard(args.shard), report=run_report)
    return _print_outcome(args.out, outcome)


def _run_workers(args: argparse.Namespace) -> int:
    from mrisynth.study.parallel import parse_gpus, run_workers

    if args.shard != "0/1":
        raise UserError("--shard cannot be combined with --gpus/--workers (they choose the shards themselves)")
    command = ["study", "run", "--out", args.out]
    if args.config:
        command += ["--config", args.config]
    for item in args.overrides:
        command += ["--set", item]
    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    code = run_workers(command, workers=args.workers or 0, gpus=gpus)
    print(f"workers finished (worst exit code {code}); `mrisynth study status {args.out}`")
    return code


def _print_outcome(run_dir: str, outcome: dict) -> int:
    print(f"trials trained now: {len(outcome['trained'])}; already done: {len(outcome['already_done'])}; "
          f"failed: {len(outcome['failed'])}; running elsewhere: {len(outcome['skipped_running'])}")
    if outcome["complete"]:
        print(f"report: {Path(run_dir) / 'report' / 'index.html'}")
    else:
        print(f"not all trials are done yet: `mrisynth study status {run_dir}`")
    return 1 if outcome["failed"] else 0


def _report(args: argparse.Namespace) -> int:
    from mrisynth.report import run_report

    out = run_report(args.run_dir)
    print(f"report: {out / 'index.html'}")
    _print_verdicts(out)
    return 0


def _status(args: argparse.Namespace) -> int:
    from mrisynth.study.conditions import build_trials
    from mrisynth.study.runner import load_run_config, trial_status

    states = trial_status(args.run_dir)
    for name, state in states.items():
        print(f"{state:<10} {name}")
    by_fraction: dict[float, Counter] = {}
    for trial in build_trials(load_run_config(args.run_dir)):
        by_fraction.setdefault(trial.fraction, Counter())[states[trial.name]] += 1
    if len(by_fraction) > 1:
        for fraction, counts in by_fraction.items():
            print(f"real fraction {fraction:g}: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                  + f" (of {sum(counts.values())})")
    counts = Counter(states.values())
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (of {len(states)})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mrisynth.config import load_config
    from mrisynth.report import run_report
    from mrisynth.study import StudyConfig, run_study

    start = time.perf_counter()
    cfg = load_config(StudyConfig, "demo")
    outcome = run_study(cfg, args.out, report=run_report)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in outcome["timings"].items())
    print(f"demo finished in {time.perf_counter() - start:.0f} s ({stages})")
    code = _print_outcome(args.out, outcome)
    if outcome["complete"]:
        _print_verdicts(Path(args.out) / "report")
    return code


def _print_verdicts(report_dir: Path) -> None:
    from mrisynth.files import read_json
    from mrisynth.report.markdown import VERDICT_HEADER, best_sentence, text_table, verdict_rows

    summary = read_json(report_dir / "summary.json")
    print(text_table(VERDICT_HEADER, verdict_rows(summary)))
    print(best_sentence(summary))
