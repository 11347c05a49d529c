"""Typed configuration: dataclasses hold the defaults, YAML files list only differences, `--set a.b=v` overrides.

    cfg = load_config(StudyConfig, "seed", overrides=["classifier.epochs=3"])
    save_config(cfg, run_dir / "config.yaml")

A YAML file may name another with `base: <name or path>`; its values are applied first. A name without a
path separator or suffix is looked up among the presets shipped in `mrisynth/configs/`.
An unknown key or a value of the wrong type is a `UserError` naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mrisynth.errors import UserError
from mrisynth.files import write_text

T = TypeVar("T")
PRESET_DIR = Path(__file__).parent / "configs"


def preset_path(name_or_path: str | os.PathLike) -> Path:
    """Resolve a preset name (`seed`) or a YAML path to an existing file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        return path
    shipped = PRESET_DIR / f"{text}.yaml"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise UserError(f"unknown preset '{text}': use one of {names}, or a path to a .yaml file")
    return shipped


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """A YAML file holding a mapping (empty file -> {}); anything else is a UserError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys to values; fix or delete it")
    return data


def read_yaml_layers(name_or_path: str | os.PathLike) -> dict:
    """Read a YAML config and the chain of `base:` files under it, merged (the file itself wins)."""
    path = preset_path(name_or_path)
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_ref = base if not str(base).endswith((".yaml", ".yml")) else path.parent / base
    return merge_dicts(read_yaml_layers(base_ref), data)


def preset_dict(presets: dict, name: str | None, what: str) -> dict:
    """A copy of the named in-code preset (a dict of differences), {} for None; unknown names are a UserError.

    `what` names the kind of preset in the message, e.g. "classifier" or "ddpm training".
    """
    if name is None:
        return {}
    if name not in presets:
        raise UserError(f"unknown {what} preset '{name}'; use one of {', '.join(presets)}")
    return dict(presets[name])


def merge_dicts(base: dict, update: dict) -> dict:
    """Recursive merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: typing.Iterable[str]) -> dict:
    """Turn ["a.b=3", "c=[1, 2]"] into {"a": {"b": 3}, "c": [1, 2]} (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def from_dict(cls: type[T], data: dict | None, *, where: str = "") -> T:
    """Build dataclass `cls` from defaults updated by `data`, checking keys and types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}{unknown[0]}"
        raise UserError(f"unknown config key '{key}'; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}{f.name}")
    # Nested dataclasses not mentioned keep their defaults; mentioned ones merge over their defaults.
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping")
        return from_dict(hint, value, where=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"config key '{key}' has an invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"config key '{key}' must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' must be a list; got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping; got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{key}' must be an integer; got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{key}' must be a number; got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"config key '{key}' must be a string; got {value!r}")
        return str(value)
    return value


def to_dict(cfg: Any) -> dict:
    """A dataclass as plain dicts and lists (tuples become lists), ready for YAML."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(dataclasses.asdict(cfg))


def load_config(
    cls: type[T],
    config: str | os.PathLike | None = None,
    *,
    overrides: typing.Iterable[str] = (),
    base: dict | None = None,
) -> T:
    """Defaults of `cls`, then `base` (e.g. a preset chosen in code), then the YAML file, then `--set` overrides."""
    data = dict(base or {})
    if config is not None:
        data = merge_dicts(data, read_yaml_layers(config))
    data = merge_dicts(data, parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config (every key, defaults included) as YAML, atomically."""
    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def replace(cfg: T, **changes: Any) -> T:
    """`dataclasses.replace`, re-exported so callers need one import."""
    return dataclasses.replace(cfg, **changes)
