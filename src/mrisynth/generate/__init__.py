"""Generators: SD-family fine-tuning through diffusers (`sd`) and class-conditional DDPM from scratch (`ddpm`).

Each backend module exposes the same four names, so the CLI and the study treat them alike:

    TrainConfig, SampleConfig      dataclasses (defaults in code; presets are YAML files of differences in
                                   mrisynth/configs/<backend>-train/ and <backend>-sample/)
    run_train(cfg, *, data_dir, out_dir) -> Path          fine-tune/train on the train split, save to out_dir
    run_sample(gen_dir, cfg, *, out_dir) -> Path          write a synthetic set (see output.py)

A trained generator folder holds `generator.json` ({"backend": ..., "data_dir": ..., "classes": [...]}).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from mrisynth.errors import UserError
from mrisynth.files import read_json

BACKENDS = {"sd": "mrisynth.generate.sd", "ddpm": "mrisynth.generate.ddpm"}
GENERATOR_JSON = "generator.json"


def backend_module(name: str) -> ModuleType:
    """The module implementing backend `name`."""
    if name not in BACKENDS:
        raise UserError(f"unknown generator backend '{name}'; use one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def read_generator_info(gen_dir: str | os.PathLike) -> dict:
    """generator.json of a trained generator, with a clear error when the folder is not one."""
    path = Path(gen_dir) / GENERATOR_JSON
    if not path.is_file():
        raise UserError(f"{gen_dir} is not a trained generator (no {GENERATOR_JSON}); run `mrisynth generator train`")
    return read_json(path)
