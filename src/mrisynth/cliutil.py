"""Argument helpers shared by the subcommand modules (kept apart from cli.py to avoid import cycles)."""

from __future__ import annotations

import argparse
from typing import TypeVar

from mrisynth.config import load_config, preset_folder, preset_names

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, *, presets_of: type | None = None,
                    preset_help: str | None = None) -> None:
    """`--config NAME_OR_YAML`, repeatable `--set key=value`, and (with `presets_of`) `--preset NAME`.

    `--preset NAME` is shorthand for `base: NAME`: a shipped YAML file of differences in
    mrisynth/configs/<folder of presets_of>/; `--config` and `--set` apply on top of it.
    """
    parser.add_argument(
        "--config",
        default=None,
        help=preset_help or "a YAML file (or shipped preset name) listing only the settings that differ",
    )
    if presets_of is not None:
        folder = preset_folder(presets_of)
        parser.add_argument("--preset", default=None, choices=preset_names(folder),
                            help=f"a shipped preset (mrisynth/configs/{folder}/NAME.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, --set key=value (repeatable; dotted keys reach nested settings; "
        "an unknown key lists the valid ones)",
    )


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Resolve a config dataclass from defaults, `--preset`, `--config` and `--set`."""
    return load_config(cls, getattr(args, "config", None), overrides=getattr(args, "overrides", []),
                       preset=getattr(args, "preset", None))
