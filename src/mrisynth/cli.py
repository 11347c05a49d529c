"""The `mrisynth` command. Thin: each subcommand parses its arguments, resolves a config and calls one function.

Subcommands live beside the code they drive (`mrisynth/<area>/cli.py`, each with a `register(subparsers)`),
so this file only wires them together and turns `UserError` into a one-line message with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mrisynth import __version__
from mrisynth.classify import cli as classify_cli
from mrisynth.data import cli as data_cli
from mrisynth.errors import UserError
from mrisynth.generate import cli as generate_cli
from mrisynth.quality import cli as quality_cli
from mrisynth.study import cli as study_cli

# Order is the order shown in --help.
AREAS = (data_cli, generate_cli, classify_cli, quality_cli, study_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrisynth",
        description="Does adding diffusion-generated images help my MRI classifier, and at what ratio?",
    )
    parser.add_argument("--version", action="version", version=f"mrisynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
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
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mrisynth: error: {exc}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    raise SystemExit(main())
