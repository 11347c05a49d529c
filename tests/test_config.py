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


def test_a_nested_section_names_its_own_preset_with_base():
    from mrisynth.study.config import StudyConfig

    cfg = load_config(StudyConfig, overrides=["classifier.base=tiny", "classifier.epochs=6"])
    # classifier/tiny.yaml says model tiny, 2 epochs, 32 px; the section's own epochs win over the preset's
    assert (cfg.classifier.model, cfg.classifier.epochs, cfg.classifier.image_size) == ("tiny", 6, 32)
    assert cfg.classifier.lr == 1e-3  # untouched by the preset: the ClassifierConfig default


def test_a_base_chain_that_loops_is_a_one_line_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nepochs: 3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UserError, match="leads back to itself"):
        load_config(Outer, tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(UserError, match="leads back to itself"):
        load_config(Outer, tmp_path / "self.yaml")


def test_base_in_a_section_without_presets_is_refused():
    with pytest.raises(UserError, match="'inner.base': this section has no presets"):
        load_config(Outer, overrides=["inner.base=tiny"])


def test_setting_a_key_and_a_key_below_it_is_a_clear_error():
    with pytest.raises(UserError, match="'epochs' was set to a value earlier"):
        load_config(Outer, overrides=["epochs=1", "epochs.x=2"])


def test_non_utf8_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("note: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_config(Outer, path)


def test_config_differences_name_dotted_keys():
    from mrisynth.config import check_resumable, config_differences

    old = {"a": 1, "inner": {"lr": 0.1, "name": "adam"}, "audit": {"x": 1}}
    new = {"a": 1, "inner": {"lr": 0.2, "name": "adam"}, "audit": {"x": 2}}
    assert config_differences(old, new) == ["audit.x", "inner.lr"]
    assert check_resumable(old, dict(new, inner=old["inner"]), resumable=["audit"], where="R") == ["audit.x"]
    with pytest.raises(UserError, match=r"R was started with other settings \(inner.lr: 0.1 then, 0.2 now\)"):
        check_resumable(old, new, resumable=["audit"], where="R")


def test_a_float_written_without_a_dot_is_a_number():
    cfg = load_config(Inner, overrides=["lr=3e-3"])  # YAML 1.1 alone would read the string "3e-3"
    assert cfg.lr == 0.003
    with pytest.raises(UserError, match="'lr' must be a number; got 'fast'"):
        load_config(Inner, overrides=["lr=fast"])
