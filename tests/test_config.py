import dataclasses

import pytest
import yaml

from mrisynth.config import load_config, save_config
from mrisynth.errors import UserError


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    name: str = "adam"


@dataclasses.dataclass
class Outer:
    epochs: int = 10
    ratios: list[float] = dataclasses.field(default_factory=lambda: [0.0, 1.0])
    inner: Inner = dataclasses.field(default_factory=Inner)
    note: str | None = None


def test_yaml_lists_only_differences_and_set_overrides_win(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("epochs: 3\ninner:\n  lr: 0.01\n")
    cfg = load_config(Outer, path, overrides=["inner.name=sgd", "ratios=[0, 0.5]"])
    assert cfg.epochs == 3 and cfg.inner.lr == 0.01 and cfg.inner.name == "sgd"
    assert cfg.ratios == [0.0, 0.5]


def test_base_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 3\nnote: from-a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nepochs: 5\n")
    cfg = load_config(Outer, tmp_path / "b.yaml")
    assert cfg.epochs == 5 and cfg.note == "from-a"


@pytest.mark.parametrize("override, message", [
    ("epoch=3", "unknown config key 'epoch'"),
    ("inner.lrr=3", "unknown config key 'inner.lrr'"),
    ("epochs=three", "'epochs' must be an integer"),
    ("ratios=5", "'ratios' must be a list"),
    ("epochs", "key=value"),
])
def test_bad_keys_and_types_are_clear_errors(override, message):
    with pytest.raises(UserError, match=message):
        load_config(Outer, overrides=[override])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Outer, overrides=["epochs=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 7
    assert load_config(Outer, tmp_path / "config.yaml") == cfg


def test_preset_dict_returns_a_copy_and_names_the_choices():
    from mrisynth.config import preset_dict

    presets = {"tiny": {"epochs": 1}, "full": {"epochs": 90}}
    assert preset_dict(presets, None, "classifier") == {}
    got = preset_dict(presets, "tiny", "classifier")
    got["epochs"] = 5
    assert presets["tiny"] == {"epochs": 1}  # callers merge into it: the shared preset must not change
    with pytest.raises(UserError, match="unknown classifier preset 'huge'; use one of tiny, full"):
        preset_dict(presets, "huge", "classifier")


def test_the_study_and_the_generator_cli_share_one_preset_lookup():
    import mrisynth.generate.cli as gen_cli
    import mrisynth.study.config as study_config
    from mrisynth.config import preset_dict

    assert gen_cli.preset_dict is preset_dict and study_config.preset_dict is preset_dict
    assert not hasattr(gen_cli, "_preset") and not hasattr(study_config, "_preset")
