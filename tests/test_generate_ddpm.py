"""DDPM backend: learning, determinism, exact resume, class conditioning, output contract, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mrisynth.checkpoint import load_weights
from mrisynth.cli import main
from mrisynth.config import from_dict, preset_values
from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord, load_manifest, save_classes, save_manifest
from mrisynth.errors import UserError
from mrisynth.files import read_json, read_jsonl, sha256_dir
from mrisynth.generate import ddpm
from mrisynth.generate.ddpm_model import seeded_noise
from mrisynth.generate.ddpm_train import diffusion_loss, draw_noise

TINY = preset_values(ddpm.TrainConfig, "tiny")


def tiny_cfg(**changes) -> ddpm.TrainConfig:
    return from_dict(ddpm.TrainConfig, {**TINY, **changes})


@pytest.fixture(scope="module")
def two_tone_dir(tmp_path_factory):
    """Two trivially different classes: dark images and bright images (train split), plus one test image each."""
    root = tmp_path_factory.mktemp("two_tone")
    rng = np.random.default_rng(0)
    records = []
    for label, (name, level) in enumerate([("dark", 40), ("bright", 215)]):
        for k in range(5):
            arr = np.clip(rng.normal(level, 8, size=(16, 16)), 0, 255).astype(np.uint8)
            path = root / f"{name}{k}.png"
            save_grayscale_png(arr, path)
            records.append(ImageRecord(id=f"{name}{k}", path=str(path), class_name=name, label=label,
                                       split="train" if k < 4 else "test"))
    save_manifest(records, root / "manifest.csv")
    save_classes(["dark", "bright"], root)
    return root


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gen")


@pytest.fixture
def trained_gen(two_tone_dir, gen_dir):
    """A tiny generator trained long enough on dark/bright to tell the classes apart, once per module.

    Function-scoped (training is skipped once done) so that it runs under conftest's one-thread setting, which
    module-scoped fixtures would precede: two threads on the shared cores made this training 20x slower.
    """
    if (gen_dir / "generator.json").is_file():
        return gen_dir
    cfg = tiny_cfg(steps=80, batch_size=8, lr=5e-3, warmup_steps=5, ema_decay=0.9, log_every=10,
                   checkpoint_every=80, p_uncond=0.2, channels=[16, 32])
    return ddpm.run_train(cfg, data_dir=two_tone_dir, out_dir=gen_dir)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    unet = ddpm.build_unet(cfg, n_classes=2)
    scheduler = ddpm.build_noise_scheduler(cfg)
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    labels = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        rng = torch.Generator().manual_seed(0)  # same noise and timesteps each step: a fixed batch
        noise, t = draw_noise(scheduler, x0, patch=1, rng=rng)
        loss = diffusion_loss(unet, scheduler, x0, labels, patch=1, noise=noise, t=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_same_seed_same_samples_and_class_changes_output():
    torch.manual_seed(0)
    unet = ddpm.build_unet(tiny_cfg(patch=2), n_classes=3).eval()
    config = ddpm.build_noise_scheduler(tiny_cfg()).config
    a = ddpm.generate(unet, config, [0, 1, 2], [1, 2, 3], steps=3)
    b = ddpm.generate(unet, config, [0, 1, 2], [1, 2, 3], steps=3)
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    other_seed = ddpm.generate(unet, config, [0, 1, 2], [1, 2, 4], steps=3)
    assert not np.array_equal(a[2], other_seed[2]) and np.array_equal(a[:2], other_seed[:2])
    # One generator per image: an image drawn alone matches the same image drawn inside a batch.
    alone = ddpm.generate(unet, config, [1], [2], steps=3)
    assert np.abs(alone[0].astype(int) - a[1].astype(int)).max() <= 1
    # The label reaches the network: same noise, other class, other image (also with DDIM, no guidance).
    for sampler, guidance in (("dpm++", 2.0), ("ddim", 1.0)):
        c0 = ddpm.generate(unet, config, [0], [7], sampler=sampler, steps=3, guidance=guidance)
        c1 = ddpm.generate(unet, config, [1], [7], sampler=sampler, steps=3, guidance=guidance)
        assert not np.array_equal(c0, c1)


def test_seeded_noise_is_per_image():
    batch = seeded_noise([5, 6], 8)
    assert torch.equal(batch[1], seeded_noise([6], 8)[0])


def test_resume_continues_exactly(tiny_manifest_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ddpm.run_train(tiny_cfg(steps=6, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=straight)
    ddpm.run_train(tiny_cfg(steps=3, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=resumed)
    assert read_json(resumed / "generator.json")["steps"] == 3
    # A crash after step 3 would leave loss lines past the checkpoint: resuming drops them.
    (resumed / "metrics.jsonl").open("a").write('{"step": 4, "loss": 9.0}\n')
    ddpm.run_train(tiny_cfg(steps=6, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=resumed)
    for name in ("unet.safetensors", "ema.safetensors"):
        a = load_weights(straight / "checkpoint" / name)
        b = load_weights(resumed / "checkpoint" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sha256_dir(straight / "unet") == sha256_dir(resumed / "unet")
    steps = [r["step"] for r in read_jsonl(resumed / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    losses = [r["loss"] for r in read_jsonl(resumed / "metrics.jsonl")]
    assert losses == [r["loss"] for r in read_jsonl(straight / "metrics.jsonl")]


def test_resume_with_other_settings_is_refused(tiny_manifest_dir, tmp_path):
    ddpm.run_train(tiny_cfg(steps=1), data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    with pytest.raises(UserError, match="lr"):
        ddpm.run_train(tiny_cfg(steps=2, lr=1e-2), data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    # A folder holding something else (here the data folder's parent) is never written into.
    with pytest.raises(UserError, match="not a generator folder"):
        ddpm.run_train(tiny_cfg(steps=1), data_dir=tiny_manifest_dir, out_dir=tmp_path)


def test_training_writes_model_grid_metrics_and_info(trained_gen, two_tone_dir):
    info = read_json(trained_gen / "generator.json")
    assert info["backend"] == "ddpm" and info["classes"] == ["dark", "bright"] and info["image_size"] == 16
    assert info["data_dir"] == str(two_tone_dir.resolve())
    assert (trained_gen / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (trained_gen / "scheduler" / "scheduler_config.json").is_file()
    assert (trained_gen / "config.yaml").is_file()
    grid = Image.open(trained_gen / "samples" / "final.png")
    assert grid.mode == "L" and grid.size == (2 * 16, 2 * 16)  # grid_per_class columns, one row per class
    losses = [r["loss"] for r in read_jsonl(trained_gen / "metrics.jsonl")]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_trained_model_follows_the_class_label(trained_gen):
    unet = ddpm.load_unet(trained_gen, device=torch.device("cpu"))
    config = ddpm.build_noise_scheduler(tiny_cfg()).config
    seeds = list(range(8))
    dark = ddpm.generate(unet, config, [0] * 8, seeds, steps=10, guidance=2.0)
    bright = ddpm.generate(unet, config, [1] * 8, seeds, steps=10, guidance=2.0)
    # The classes are 175 grey levels apart in the training data.
    assert bright.mean() - dark.mean() > 60


def test_sample_output_contract_and_resume(trained_gen, tmp_path):
    out = tmp_path / "syn"
    cfg = from_dict(ddpm.SampleConfig, {**preset_values(ddpm.SampleConfig, "fast"), "n_per_class": 2, "batch_size": 3})
    ddpm.run_sample(trained_gen, cfg, out_dir=out)
    rows = load_manifest(out)
    assert [r.class_name for r in rows] == ["dark", "dark", "bright", "bright"]
    gen_sha = sha256_dir(trained_gen / "unet")
    for r in rows:
        img = Image.open(r.path)
        assert img.mode == "L" and img.size == (16, 16)
        assert r.source == "synthetic" and r.generator_sha256 == gen_sha
        assert r.steps == 10 and r.guidance == 2.0 and r.seed == ddpm.image_seed(0, r.class_name, int(r.id[-6:]))
    assert (out / "config.yaml").is_file() and read_json(out / "classes.json")["classes"] == ["dark", "bright"]
    first = {r.id: (r.sha256, r.path) for r in rows}
    mtimes = {i: os.stat(p).st_mtime_ns for i, (_, p) in first.items()}
    # Asking for more resumes: existing images are kept untouched, the new ones are added.
    ddpm.run_sample(trained_gen, from_dict(ddpm.SampleConfig, {**preset_values(ddpm.SampleConfig, "fast"), "n_per_class": 3}),
                    out_dir=out)
    rows = load_manifest(out)
    assert len(rows) == 6
    for r in rows:
        if r.id in first:
            assert r.sha256 == first[r.id][0] and os.stat(r.path).st_mtime_ns == mtimes[r.id]
    # Changing what an image is (its seed) in the same folder is refused.
    with pytest.raises(UserError, match="seed"):
        ddpm.run_sample(trained_gen, ddpm.SampleConfig(n_per_class=3, seed=1, steps=10), out_dir=out)


def test_cli_train_and_sample(tiny_manifest_dir, tmp_path, capsys):
    gen, syn = tmp_path / "gen", tmp_path / "syn"
    assert main(["generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tiny_manifest_dir),
                 "--out", str(gen), "--set", "steps=2"]) == 0
    assert main(["generator", "sample", "--generator", str(gen), "--n-per-class", "1", "--out", str(syn),
                 "--preset", "fast", "--set", "steps=2"]) == 0
    assert len(load_manifest(syn)) == 3
    assert main(["generator", "sample", "--generator", str(gen), "--n-per-class", "1", "--out", str(syn),
                 "--set", "classes=[nope]"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["generator", "train", "--backend", "ddpm", "--preset", "tiny", "--data", str(tiny_manifest_dir),
                 "--out", str(tmp_path / "g2"), "--set", "image_size=17"]) == 2


def test_no_train_split_is_a_clear_error(tiny_manifest_dir, tmp_path):
    rows = load_manifest(tiny_manifest_dir)
    for r in rows:
        r.split = "test"
    save_manifest(rows, tiny_manifest_dir / "manifest.csv")
    with pytest.raises(UserError, match="train split"):
        ddpm.run_train(tiny_cfg(), data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")


@pytest.mark.gpu
def test_gpu_path_trains_and_samples(tiny_manifest_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gen = ddpm.run_train(tiny_cfg(device="cuda", compile=True, steps=4), data_dir=tiny_manifest_dir,
                         out_dir=tmp_path / "gen")
    cfg = ddpm.SampleConfig(n_per_class=2, steps=3, device="cuda")
    ddpm.run_sample(gen, cfg, out_dir=tmp_path / "syn")
    assert len(load_manifest(tmp_path / "syn")) == 6


def test_sampling_refuses_guidance_below_one_before_writing(trained_gen, tmp_path):
    """At 0 the images were unconditional yet labelled by class."""
    with pytest.raises(UserError, match="guidance must be 1"):
        ddpm.run_sample(trained_gen, ddpm.SampleConfig(n_per_class=1, guidance=0.0), out_dir=tmp_path / "syn")
    assert not (tmp_path / "syn").exists()


def test_per_class_counts(trained_gen, tmp_path):
    cfg = ddpm.SampleConfig(counts={"dark": 1, "bright": 3}, steps=2)
    ddpm.run_sample(trained_gen, cfg, out_dir=tmp_path / "syn")
    assert [r.id for r in load_manifest(tmp_path / "syn")] == [
        "syn-dark-000000", "syn-bright-000000", "syn-bright-000001", "syn-bright-000002"]


def test_weights_changed_since_training_are_refused(trained_gen, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    gen = tmp_path / "gen"
    shutil.copytree(trained_gen, gen)
    weights = gen / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] + 1e-3  # loadable, but not the trained model
    save_file(tensors, weights)
    with pytest.raises(UserError, match="changed since the generator was trained"):
        ddpm.run_sample(gen, ddpm.SampleConfig(n_per_class=1, steps=2), out_dir=tmp_path / "syn")
    info = read_json(gen / "generator.json")
    info.pop("sha256")  # an old generator.json without a hash: a truncated file is still a one-line error
    from mrisynth.files import write_json

    write_json(gen / "generator.json", info)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot load the UNet"):
        ddpm.run_sample(gen, ddpm.SampleConfig(n_per_class=1, steps=2), out_dir=tmp_path / "syn2")


def test_resume_on_a_changed_train_split_is_refused(tiny_manifest_dir, tmp_path):
    """Re-preparing the data with another split used to be resumed: the run had learned from today's val images."""
    gen = tmp_path / "gen"
    ddpm.run_train(tiny_cfg(steps=3, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=gen)
    rows = load_manifest(tiny_manifest_dir)
    train = [r for r in rows if r.split == "train"]
    train[0].split = "val"
    save_manifest(rows, tiny_manifest_dir / "manifest.csv")
    with pytest.raises(UserError, match="another train split"):
        ddpm.run_train(tiny_cfg(steps=6, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=gen)


def test_validation_records_and_keep_best(tiny_manifest_dir, tmp_path):
    """val_* records every val_every steps, drawn with the sampling recipe; keep_best saves the best EMA weights."""
    seen = []

    def validate(images, labels):
        seen.append((images.shape, labels.tolist()))
        return {"val_fd": [5.0, 1.0, 3.0][len(seen) - 1]}  # best at the second validation (step 4)

    cfg = tiny_cfg(steps=6, checkpoint_every=2, val_every=2, val_per_class=2, keep_best="val_fd",
                   sample_preset="fast")
    gen = ddpm.run_train(cfg, data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen", validate=validate)
    records = [r for r in read_jsonl(gen / "metrics.jsonl") if "val_fd" in r]
    assert [(r["step"], r["val_fd"]) for r in records] == [(2, 5.0), (4, 1.0), (6, 3.0)]
    assert seen[0] == ((6, 16, 16), [0, 0, 1, 1, 2, 2])  # class-balanced, val_per_class each
    assert read_json(gen / "best" / "best.json") == {"step": 4, "metric": "val_fd", "value": 1.0}
    best = load_weights(gen / "best" / "ema.safetensors")
    last = load_weights(gen / "checkpoint" / "ema.safetensors")
    saved = ddpm.load_unet(gen, device=torch.device("cpu")).state_dict()
    assert all(torch.equal(saved[k], best[k]) for k in best)  # the generator is the step-4 EMA, not step 6's
    assert any(not torch.equal(best[k], last[k]) for k in best)
    with pytest.raises(UserError, match="val_every needs a validation function"):
        ddpm.run_train(tiny_cfg(val_every=2), data_dir=tiny_manifest_dir, out_dir=tmp_path / "g2")


def test_a_damaged_but_loadable_checkpoint_is_refused_on_resume(tiny_manifest_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    gen = tmp_path / "gen"
    ddpm.run_train(tiny_cfg(steps=3, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=gen)
    weights = gen / "checkpoint" / "unet.safetensors"
    tensors = load_file(weights)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] + 1e-3  # safetensors loads it happily
    save_file(tensors, weights)
    with pytest.raises(UserError, match="does not match the sha256 its checkpoint recorded"):
        ddpm.run_train(tiny_cfg(steps=6, checkpoint_every=3), data_dir=tiny_manifest_dir, out_dir=gen)


def test_training_images_are_normalised_as_the_setting_says(two_tone_dir):
    """percentile stretches each image's 0.5..99.5 percentiles to 0..255: a dark image (grey ~40 +- 8) comes out
    spanning the full range, so the generator learns what the classifier will see, not the raw scanner grey."""
    from mrisynth.generate.ddpm_train import load_training_data

    raw = load_training_data(two_tone_dir, tiny_cfg(), device=torch.device("cpu"))
    stretched = load_training_data(two_tone_dir, tiny_cfg(normalize="percentile"), device=torch.device("cpu"))
    dark = raw.labels == 0
    assert 30 < raw.images[dark].float().mean() < 50  # as stored
    assert stretched.images[dark].amin() == 0 and stretched.images[dark].amax() == 255
    assert 100 < stretched.images[dark].float().mean() < 155
    assert stretched.fingerprint != raw.fingerprint  # resume refuses a run that learned the other intensities


def test_an_unknown_normalisation_is_refused_when_the_config_is_made():
    with pytest.raises(UserError, match="use none, percentile"):
        tiny_cfg(normalize="minmax")
