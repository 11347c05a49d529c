"""One typed config tree: a typo or a wrong type at any depth fails at load, before anything is written; the run's
config.yaml is the fully resolved config and loads back to the same; resume is refused when a setting that decides
what a trial learns changed, allowed for the listed resumable ones."""

from __future__ import annotations

import pytest
import yaml

from mrisynth.cli import main
from mrisynth.config import load_config, save_config, to_dict
from mrisynth.errors import UserError
from mrisynth.study import StudyConfig, run_study
from test_study_runner import small_config


@pytest.mark.parametrize("override, key", [
    ("classifier.epochz=3", "classifier.epochz"),
    ("classifier.augment.rotaton_deg=3", "classifier.augment.rotaton_deg"),
    ("audit.settings.imag_size=3", "audit.settings.imag_size"),
    ("generator.train.stepz=3", "generator.train.stepz"),
    ("generator.sample.stepz=3", "generator.sample.stepz"),
    ("data.prepare.splt=patient", "data.prepare.splt"),
    ("data.phantom.patiens=3", "data.phantom.patiens"),
    ("ratioz=[0, 1]", "ratioz"),
])
def test_a_typo_in_any_section_fails_at_load_and_writes_nothing(override, key, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["study", "run", "--config", "demo", "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"unknown config key '{key}'; valid keys here:" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ("classifier.epochs=0", "classifier: epochs must be at least 1"),
    ("classifier.normalize=zscor", "classifier: normalize .zscor. is not known"),
    ("generator.sample.guidance=x", "'generator.sample.guidance' must be a number"),
    ("generator.backend=gan", "'generator.backend' must be one of ddpm, sd"),
    ("generator.train.base=nope", "unknown ddpm-train preset 'nope': use one of demo, full, tiny"),
])
def test_wrong_values_fail_at_load_naming_the_key(override, message):
    with pytest.raises(UserError, match=message):
        load_config(StudyConfig, "demo", overrides=[override])


def test_the_generator_sections_take_the_chosen_backends_types():
    ddpm = load_config(StudyConfig, "demo")
    sd = load_config(StudyConfig, "demo", overrides=["generator.backend=sd", "generator.train.base=full",
                                                     "generator.sample.base=seed"])
    assert type(ddpm.generator.train).__module__.endswith("ddpm_config")
    assert type(sd.generator.train).__module__.endswith(".sd_config") and sd.generator.train.mode == "full"
    with pytest.raises(UserError, match="unknown config key 'generator.train.patch'"):  # a DDPM key under sd
        load_config(StudyConfig, "demo", overrides=["generator.backend=sd", "generator.train.base=full",
                                                    "generator.sample.base=seed", "generator.train.patch=2"])


@pytest.mark.parametrize("preset", ["demo", "seed", "rigorous"])
def test_the_resolved_config_round_trips_through_yaml(preset, tmp_path):
    cfg = load_config(StudyConfig, preset, overrides=["data.source=/data/figshare"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "base:" not in text  # fully resolved: every value, no preset names left
    assert yaml.safe_load(text)["classifier"]["epochs"] == cfg.classifier.epochs
    assert load_config(StudyConfig, tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("preset", ["seed", "rigorous"])
def test_a_real_data_preset_without_data_says_how_to_get_it(preset, tmp_path, capsys):
    assert main(["study", "run", "--config", preset, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mrisynth data download figshare" in err[0] and "--set data.source=" in err[0]
    assert not (tmp_path / "run").exists()


def test_shipped_presets_name_no_developer_path():
    from mrisynth.config import PRESET_DIR

    for path in PRESET_DIR.rglob("*.yaml"):
        assert "shared/data" not in path.read_text(), path


def test_resume_refuses_a_changed_setting_but_accepts_a_resumable_one(tiny_manifest_dir, tmp_path, monkeypatch):
    from test_study_runner import install_fakes

    install_fakes(monkeypatch)
    run = tmp_path / "run"
    cfg = small_config(tiny_manifest_dir, seeds=[0], ratios=[0, 1])
    run_study(cfg, run)
    changed = load_config(StudyConfig, run / "config.yaml", overrides=["classifier.lr=0.5"])
    with pytest.raises(UserError, match=r"other settings \(classifier.lr: 0.001 then, 0.5 now\)"):
        run_study(changed, run)
    louder = load_config(StudyConfig, run / "config.yaml", overrides=["alpha=0.01", "classifier.device=cpu"])
    assert run_study(louder, run)["complete"]
    assert to_dict(load_config(StudyConfig, run / "config.yaml")) == to_dict(louder)  # config.yaml: what ran last


def test_generator_and_classifier_normalisation_are_one_setting():
    """Synthetic images must be drawn in the intensity space the classifier reads real ones in."""
    with pytest.raises(UserError, match="generator.train.normalize is 'none' but classifier.normalize is 'zscore'"):
        load_config(StudyConfig, "demo", overrides=["classifier.normalize=zscore"])
    cfg = load_config(StudyConfig, "demo", overrides=["classifier.normalize=zscore",
                                                      "generator.train.normalize=zscore"])
    assert cfg.generator.train.normalize == cfg.classifier.normalize == "zscore"
    rigorous = load_config(StudyConfig, "rigorous", overrides=["data.source=/data/figshare"])
    assert rigorous.generator.train.normalize == rigorous.classifier.normalize == "zscore"
