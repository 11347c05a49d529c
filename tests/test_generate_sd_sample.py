"""SD backend, sampling: a tiny LoRA generator, then text2img and img2img synthetic sets and the checks before them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrisynth.cli import main
from mrisynth.config import from_dict, load_config, preset_values
from mrisynth.data.manifest import load_classes, load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import sha256_dir
from mrisynth.generate import read_generator_info
from mrisynth.generate.sd import (
    SampleConfig,
    TrainConfig,
    run_sample,
    run_train,
)
from sd_tiny import save_tiny_pipeline

CLASSES = ["glioma", "meningioma", "pituitary"]


@pytest.fixture(scope="module")
def generator_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdgen")


@pytest.fixture
def generator(generator_root: Path) -> Path:
    """A LoRA generator fine-tuned for 2 steps (the `tiny` preset), once per module.

    Function-scoped (skipped once trained) so that it runs under conftest's one-thread setting, which
    module-scoped fixtures would precede (two threads fighting over the shared cores: 10x slower).
    """
    root = generator_root
    if (root / "gen" / "generator.json").is_file():
        return root / "gen"
    model = save_tiny_pipeline(root / "tiny-sd")
    data = _tiny_data(root)
    cfg = from_dict(TrainConfig, {**preset_values(TrainConfig, "tiny"), "model": str(model), "size": 16})
    return run_train(cfg, data_dir=data, out_dir=root / "gen")


def _tiny_data(root: Path) -> Path:
    # The conftest fixture is function-scoped; build the same kind of folder once for the module.
    from mrisynth.data.images import save_grayscale_png
    from mrisynth.data.manifest import ImageRecord, save_classes, save_manifest

    rng = np.random.default_rng(0)
    records = []
    for label, name in enumerate(CLASSES):
        for p, split in enumerate(("train", "train", "val", "test")):
            arr = rng.integers(0, 256, size=(24, 24), dtype=np.uint8)
            path = root / f"{name}-{p}.png"
            save_grayscale_png(arr, path)
            records.append(ImageRecord(id=f"{name}-{p}", path=str(path), class_name=name, label=label,
                                       patient_id=f"{name}{p}", split=split))
    data = root / "data"
    data.mkdir()
    save_manifest(records, data / "manifest.csv")
    save_classes(CLASSES, data)
    return data


def sample(generator: Path, out: Path, **changes) -> list:
    cfg = SampleConfig(**{"n_per_class": 2, "batch_size": 4, "steps": 2, **changes})
    run_sample(generator, cfg, out_dir=out)
    return load_manifest(out)


def pixels(record) -> np.ndarray:
    with Image.open(record.path) as img:
        assert img.mode == "L"  # one channel on disk: no colour
        return np.asarray(img)


def test_text2img_writes_one_channel_images_with_provenance(generator, tmp_path):
    rows = sample(generator, tmp_path / "syn", size=24)
    assert [r.class_name for r in rows] == [c for c in CLASSES for _ in range(2)]
    assert load_classes(tmp_path / "syn") == CLASSES
    info = read_generator_info(generator)
    # A LoRA generator is the adapter *and* the base UNet it was trained on: the checksum covers both.
    checksum = hashlib.sha256(f"{sha256_dir(generator / 'lora')}+{info['base_sha256']}".encode()).hexdigest()
    assert info["base_sha256"] == sha256_dir(Path(info["base_model"]) / "unet")
    for r in rows:
        assert pixels(r).shape == (24, 24)  # resized to the chosen output size
        assert (r.width, r.height, r.source, r.split) == (24, 24, "synthetic", "train")
        assert r.prompt.endswith(r.class_name) and r.seed >= 0 and r.steps == 2
        assert r.guidance == 2.0 and r.strength is None and r.source_image_id == ""  # the default guidance
        assert r.generator_sha256 == checksum and len(r.sha256) == 64
    assert len({r.seed for r in rows}) == len(rows)
    assert (tmp_path / "syn" / "config.yaml").is_file()


def test_same_seed_same_images_and_each_image_reproducible_alone(generator, tmp_path):
    first = sample(generator, tmp_path / "a")
    again = sample(generator, tmp_path / "b")
    assert [r.sha256 for r in first] == [r.sha256 for r in again]
    other = sample(generator, tmp_path / "c", seed=1)
    assert not any(np.array_equal(pixels(x), pixels(y)) for x, y in zip(first, other))
    # One image per batch: the same pixels (up to a grey level of float noise from another batch shape).
    alone = sample(generator, tmp_path / "d", batch_size=1)
    for x, y in zip(first, alone):
        assert x.seed == y.seed
        assert np.abs(pixels(x).astype(int) - pixels(y).astype(int)).max() <= 1


def test_img2img_starts_from_training_images_of_the_same_class(generator, tmp_path):
    rows = sample(generator, tmp_path / "syn", mode="img2img", steps=4, guidance=7.5, strength=0.5,
                  scheduler="euler")
    real = load_manifest(read_generator_info(generator)["data_dir"])
    train = {r.id: r.class_name for r in select(real, split="train")}
    assert len(rows) == 6
    for r in rows:
        assert train[r.source_image_id] == r.class_name  # a train-split image of its own class
        # 4 steps at strength 0.5 skip the first half of the schedule: 2 denoising steps ran, and that is recorded.
        assert r.strength == 0.5 and r.guidance == 7.5 and r.steps == 2
        assert pixels(r).shape == (16, 16)  # the training size by default


def test_a_stopped_run_resumes_without_redoing_images(generator, tmp_path):
    out = tmp_path / "syn"
    first = {r.id: r.sha256 for r in sample(generator, out, n_per_class=1)}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    rows = sample(generator, out, n_per_class=2)
    assert len(rows) == 6
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not rewritten
    assert {r.id: r.sha256 for r in rows if r.id in first} == first


def test_a_resumed_set_refuses_other_settings_and_keeps_its_config(generator, tmp_path):
    out = tmp_path / "syn"
    sample(generator, out, n_per_class=1, guidance=1.0)
    config = (out / "config.yaml").read_text()
    pngs = sorted(out.rglob("*.png"))
    for change in ({"steps": 3}, {"seed": 1}, {"guidance": 7.5}, {"mode": "img2img"}):
        with pytest.raises(UserError, match=f"{next(iter(change))}: "):
            sample(generator, out, **{"n_per_class": 2, "guidance": 1.0, **change})
        assert (out / "config.yaml").read_text() == config  # the record of how the set was made stays true
        assert sorted(out.rglob("*.png")) == pngs  # and nothing of the other settings was added
    # Cutting the work up differently is fine: more images, another batch size.
    rows = sample(generator, out, n_per_class=2, guidance=1.0, batch_size=1)
    assert len(rows) == 6
    assert {r.guidance for r in rows} == {1.0}  # 1 = off: the conditional model alone


def test_cli_sample_with_the_finetuned_preset(generator, tmp_path, capsys):
    code = main(["generator", "sample", "--generator", str(generator), "--n-per-class", "1",
                 "--out", str(tmp_path / "syn"), "--preset", "finetuned", "--mode", "text2img", "--set", "steps=3"])
    assert code == 0
    rows = load_manifest(tmp_path / "syn")
    assert len(rows) == 3 and all(r.steps == 3 and r.guidance == 2.0 for r in rows)


def test_bad_sampling_settings_are_user_errors(generator, tmp_path):
    with pytest.raises(UserError, match="strength"):
        sample(generator, tmp_path / "syn", mode="img2img", strength=0.0)
    with pytest.raises(UserError, match="not a trained generator"):
        run_sample(tmp_path, SampleConfig(n_per_class=1), out_dir=tmp_path / "syn")


def test_img2img_that_would_run_no_step_is_refused_before_anything_is_written(generator, tmp_path, capsys):
    """steps x strength < 1 used to run from t=999 (pure noise) while recording a source image and strength."""
    out = tmp_path / "syn"
    with pytest.raises(UserError, match=r"runs no denoising step.*steps of 2 or more"):
        sample(generator, out, mode="img2img", steps=1, strength=0.75, guidance=1.0)
    assert not out.exists() or not list(out.rglob("*.png"))
    code = main(["generator", "sample", "--generator", str(generator), "--n-per-class", "1", "--out",
                 str(tmp_path / "cli"), "--mode", "img2img", "--set", "steps=1", "--set", "strength=0.75"])
    err = capsys.readouterr().err
    assert code == 2 and "runs no denoising step" in err and len(err.strip().splitlines()) == 1


def test_guidance_below_one_is_refused(generator, tmp_path):
    """0 used to mean "off" here but "unconditional" in the DDPM backend; both now mean 1 = off, < 1 refused."""
    for guidance in (0.0, 0.5):
        with pytest.raises(UserError, match="guidance must be 1"):
            sample(generator, tmp_path / "syn", guidance=guidance)


def test_non_finite_latents_are_an_error_not_black_pngs(generator, tmp_path, monkeypatch):
    from mrisynth.generate import sd_sample

    real = sd_sample.denoise
    monkeypatch.setattr(sd_sample, "denoise", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(UserError, match=r"NaN/Inf.*precision=fp32"):
        sample(generator, tmp_path / "syn")
    assert not list((tmp_path / "syn").rglob("*.png"))


def test_nan_from_the_vae_decoder_is_an_error(generator):
    import torch

    from mrisynth.generate.sd_latents import decode_latents
    from mrisynth.generate.sd_load import load_vae

    vae = load_vae(read_generator_info(generator)["base_model"])
    latents = torch.zeros(2, 4, 8, 8)
    assert decode_latents(vae, latents).shape == (2, 16, 16)
    latents[1, 0, 3, 3] = float("inf")
    with pytest.raises(UserError, match="VAE decoding produced NaN/Inf"):
        decode_latents(vae, latents)


def test_per_class_counts_replace_n_per_class(generator, tmp_path):
    rows = sample(generator, tmp_path / "syn", counts={"glioma": 3, "pituitary": 1})
    assert [r.id for r in rows] == ["syn-glioma-000000", "syn-glioma-000001", "syn-glioma-000002",
                                    "syn-pituitary-000000"]
    with pytest.raises(UserError, match="counts names class 'astrocytoma'"):
        sample(generator, tmp_path / "bad", counts={"astrocytoma": 1})


def test_few_step_sampling_of_a_fine_tuned_generator_warns(generator, tmp_path, caplog):
    sample(generator, tmp_path / "a", n_per_class=1, steps=2)
    assert any("blurred averages" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    caplog.clear()
    sample(generator, tmp_path / "b", n_per_class=1, steps=5)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_default_recipe_is_multi_step_with_guidance():
    """After a plain fine-tune the 1-step turbo recipe gives blurred averages: the default must not be it."""
    default = SampleConfig()
    assert (default.mode, default.steps, default.guidance, default.scheduler) == ("text2img", 30, 2.0, "euler")
    assert preset_values(SampleConfig, "finetuned") == {"mode": "text2img", "steps": 30, "guidance": 2.0,
                                                         "scheduler": "euler", "timestep_spacing": "trailing"}
    turbo = load_config(SampleConfig, preset="turbo")  # shipped presets must pass the guidance rule
    assert (turbo.steps, turbo.guidance) == (1, 1.0)


def test_changed_base_weights_are_refused(generator, tmp_path):
    """A LoRA adapter needs the base it was trained on: a changed base UNet is refused before sampling."""
    import shutil

    info = read_generator_info(generator)
    base = Path(info["base_model"])
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] + 1e-3  # still loadable, but not the same model
    save_file(tensors, weights)
    moved = tmp_path / "gen"
    shutil.copytree(generator, moved)
    from mrisynth.files import write_json

    write_json(moved / "generator.json", {**info, "base_model": str(copy)})
    with pytest.raises(UserError, match=r"unet changed since the generator was trained"):
        sample(moved, tmp_path / "syn")
