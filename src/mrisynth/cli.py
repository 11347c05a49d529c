"""The `mrisynth` command. Thin: each subcommand parses its arguments, resolves a config and calls one function.

Subcommands live beside the code they drive (`mrisynth/<area>/cli.py`, each with a `register(subparsers)`),
so this file only wires them together and turns `UserError` into a one-line message with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from mrisynth import __version__
from mrisynth.classify import cli as classify_cli
from mrisynth.data import cli as data_cli
from mrisynth.errors import UserError
from mrisynth.generate import cli as generate_cli
from mrisynth.quality import cli as quality_cli
from mrisynth.quality.generator_validation import build_generator_validation
from mrisynth.study import cli as study_cli

# Order is the order shown in --help.
AREAS = (data_cli, generate_cli, classify_cli, quality_cli, study_cli)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes get the same one-line error (exit code 2) as every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mrisynth: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="mrisynth",
        description="Does adding diffusion-generated images help my MRI classifier, and at what ratio?",
    )
    parser.add_argument("--version", action="version", version=f"mrisynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        if area is generate_cli:  # the generator's validation scorer lives above generate/ (in quality/)
            area.register(subparsers, build_validation=build_generator_validation)
        else:
            area.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr)
    fresh_out = _fresh_output(args)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mrisynth: error: {exc}", file=sys.stderr)
        _remove_if_nothing_made(fresh_out)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python from failing again while flushing at exit
        return 0
    except OSError as exc:
        from mrisynth.files import storage_error

        error = storage_error(exc)
        if error is None:
            raise
        print(f"mrisynth: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrisynth: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _fresh_output(args: argparse.Namespace) -> Path | None:
    """The --out folder when this command is about to create it (None when it exists already or there is none)."""
    out = getattr(args, "out", None)
    return Path(out) if out and not Path(out).exists() else None


def _remove_if_nothing_made(out: Path | None) -> None:
    """After a refused command, remove the --out folder it created if it holds no result (a config.yaml at most).

    A folder with any real output is kept: the same command resumes from it.
    """
    if out is None or not out.is_dir():
        return
    made = [p for p in out.rglob("*") if p.is_file() and p.name != "config.yaml" and not p.name.startswith(".")]
    if not made:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
