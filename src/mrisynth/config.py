"""Typed configuration: dataclasses hold the defaults, YAML files list only differences, `--set a.b=v` overrides.

    cfg = load_config(StudyConfig, "demo", overrides=["classifier.epochs=3"])
    save_config(cfg, run_dir / "config.yaml")

One preset mechanism: a preset is a YAML file of differences shipped in `mrisynth/configs/<folder>/`, where
`<folder>` is the `PRESETS` class attribute of the dataclass it configures (e.g. `classifier`, `study`). Any
mapping, at any depth, may name a preset of its own dataclass with `base: NAME` (or `base: path.yaml`); the
preset's values are applied first, then the mapping's own. So a study preset can say
`classifier: {base: tiny, epochs: 6}`. `--preset NAME` on a command is shorthand for `base: NAME`.

A dataclass may choose the types of some of its fields from the data itself (a classmethod
`config_field_types(data) -> {field: type}`): the generator settings type `train`/`sample` by `backend`.
An unknown key, a value of the wrong type, a bad `base:` or an out-of-range value is a `UserError` naming the key,
raised at load, before any work starts. `save_config` writes the fully resolved config (no `base:` left).
"""

from __future__ import annotations

import contextlib
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
BASE_KEY = "base"
_MAX_BASE_DEPTH = 16  # a chain longer than this is a loop (a file naming itself, a -> b -> a)


def preset_folder(cls: type) -> str | None:
    """The folder under mrisynth/configs/ holding the presets of dataclass `cls` (None: it has none)."""
    return getattr(cls, "PRESETS", None)


def preset_names(folder: str) -> list[str]:
    """The shipped presets of one folder, e.g. preset_names("classifier") -> ["fast", "seed", "tiny"]."""
    return sorted(p.stem for p in (PRESET_DIR / folder).glob("*.yaml"))


def preset_values(cls: type, name: str) -> dict:
    """The differences a shipped preset of `cls` lists (its `base:` chain merged), e.g. for tests and benchmarks."""
    return read_yaml_layers(name, preset_folder(cls) or "")


def preset_path(name_or_path: str | os.PathLike, folder: str = "study", *, relative_to: Path | None = None) -> Path:
    """Resolve a preset name (`seed`, looked up in configs/<folder>/) or a YAML path to an existing file."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        return path
    shipped = PRESET_DIR / folder / f"{text}.yaml"
    if not shipped.is_file():
        names = ", ".join(preset_names(folder)) or "(none shipped)"
        raise UserError(f"unknown {folder} preset '{text}': use one of {names}, or a path to a .yaml file")
    return shipped


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """A YAML file holding a mapping (empty file -> {}); anything else is a UserError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix or delete it") from exc
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys to values; fix or delete it")
    return data


def read_yaml_layers(name_or_path: str | os.PathLike, folder: str = "study", *, _seen: tuple = ()) -> dict:
    """Read a YAML config and the chain of `base:` files under it, merged (the file itself wins)."""
    path = preset_path(name_or_path, folder, relative_to=Path(_seen[-1]).parent if _seen else None)
    if str(path.resolve()) in _seen or len(_seen) > _MAX_BASE_DEPTH:
        raise UserError(f"{path}: its `base:` chain leads back to itself; make it name another preset")
    data = read_yaml_mapping(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    return merge_dicts(read_yaml_layers(base, folder, _seen=(*_seen, str(path.resolve()))), data)


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
        if not all(parts):
            raise UserError(f"--set {item}: the key has an empty part; write dotted keys like classifier.epochs=3")
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item}: '{'.'.join(parts[:depth + 1])}' was set to a value earlier, "
                                "so it has no keys; set one or the other")
        node[parts[-1]] = value
    return out


def from_dict(cls: type[T], data: dict | None, *, where: str = "") -> T:
    """Build dataclass `cls` from defaults updated by `data` (after its `base:` preset), checking keys and types."""
    data = _with_base(cls, dict(data or {}), where)
    hints = typing.get_type_hints(cls)
    chooser = getattr(cls, "config_field_types", None)
    if chooser is not None:
        hints.update(chooser(data))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}{unknown[0]}"
        raise UserError(f"unknown config key '{key}'; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}{f.name}")
        elif chooser is not None and f.name in chooser(data):
            kwargs[f.name] = from_dict(hints[f.name], {}, where=f"{where}{f.name}.")  # the chosen type's defaults
    # Nested dataclasses not mentioned keep their defaults; mentioned ones merge over their defaults.
    try:
        return cls(**kwargs)
    except UserError as exc:  # a range check in __post_init__: say where in the tree it was
        if where and not str(exc).startswith(where.rstrip(".")):
            raise UserError(f"{where.rstrip('.')}: {exc}") from None
        raise


def _with_base(cls: type, data: dict, where: str) -> dict:
    """`data` merged over the preset its `base:` key names (looked up among the presets of `cls`)."""
    if BASE_KEY not in data:
        return data
    folder = preset_folder(cls)
    base = data.pop(BASE_KEY)
    if folder is None:
        raise UserError(f"config key '{where}{BASE_KEY}': this section has no presets; list its settings instead")
    if not isinstance(base, str) or not base:
        raise UserError(f"config key '{where}{BASE_KEY}' must name a {folder} preset: one of "
                        f"{', '.join(preset_names(folder))}")
    return merge_dicts(read_yaml_layers(base, folder), data)


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
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string; everyone means the number
            with contextlib.suppress(ValueError):
                value = float(value)
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


def config_differences(old: dict, new: dict, *, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (as `to_dict` gives them)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_resumable(saved: dict, wanted: dict, *, resumable: typing.Iterable[str], where: str) -> list[str]:
    """The keys that differ between a run's saved config and the one asked for now; a UserError when any of them
    is not in `resumable` (dotted keys; a section name covers everything under it)."""
    allowed = tuple(resumable)
    changed = config_differences(saved, wanted)
    fixed = [k for k in changed if not any(k == a or k.startswith(f"{a}.") for a in allowed)]
    if fixed:
        key = fixed[0]
        raise UserError(f"{where} was started with other settings ({key}: {_lookup(saved, key)!r} then, "
                        f"{_lookup(wanted, key)!r} now); rerun with the same --config/--set, or choose a new --out")
    return changed


def _lookup(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def load_config(
    cls: type[T],
    config: str | os.PathLike | None = None,
    *,
    overrides: typing.Iterable[str] = (),
    preset: str | None = None,
) -> T:
    """Defaults of `cls`, then the `preset` (a shipped name), then the YAML file, then `--set` overrides.

    `config` is a YAML path or the name of a shipped preset of `cls`.
    """
    data: dict = {BASE_KEY: preset} if preset else {}
    if config is not None:
        data = merge_dicts(data, read_yaml_layers(config, preset_folder(cls) or ""))
    data = merge_dicts(data, parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config (every key, defaults included) as YAML, atomically."""
    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def replace(cfg: T, **changes: Any) -> T:
    """`dataclasses.replace`, re-exported so callers need one import."""
    return dataclasses.replace(cfg, **changes)


def check_at_least(cfg: Any, minimum: float, *keys: str) -> None:
    """A one-line UserError naming the first of `keys` whose value in `cfg` is below `minimum` (for the size and
    count settings' `__post_init__`, so a bad value is refused when the config is loaded, before any work)."""
    for key in keys:
        value = getattr(cfg, key)
        if not value >= minimum:  # also refuses NaN
            raise UserError(f"{key} must be at least {minimum}, got {value}")


def check_within(cfg: Any, key: str, low: float, high: float, *, high_open: bool = False) -> None:
    """A one-line UserError unless low <= cfg.key <= high (< high when `high_open`)."""
    value = getattr(cfg, key)
    if not (low <= value < high if high_open else low <= value <= high):
        raise UserError(f"{key} must be in [{low}, {high}{')' if high_open else ']'}, got {value}")
