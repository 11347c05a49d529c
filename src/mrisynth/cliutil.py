"""Argument helpers shared by the subcommand modules (kept apart from cli.py to avoid import cycles)."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from mrisynth.config import load_config

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, *, preset_help: str | None = None) -> None:
    """`--config NAME_OR_YAML` and repeatable `--set key=value`."""
    parser.add_argument(
        "--config",
        default=None,
        help=preset_help or "a YAML file (or shipped preset name) listing only the settings that differ",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, --set key=value (repeatable; dotted keys reach nested settings; "
        "an unknown key lists the valid ones)",
    )


def config_from_args(cls: type[T], args: argparse.Namespace, *, base: dict[str, Any] | None = None) -> T:
    """Resolve a config dataclass from defaults, `base`, `--config` and `--set`."""
    return load_config(cls, getattr(args, "config", None), overrides=getattr(args, "overrides", []), base=base)
