"""SD backend, fine-tuning: a tiny random-init pipeline saved with save_pretrained and loaded back by path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mrisynth.cli import main
from mrisynth.config import from_dict, preset_values
from mrisynth.data.manifest import load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import read_jsonl
from mrisynth.generate import read_generator_info
from mrisynth.generate import sd_latents as latents_mod
from mrisynth.generate.sd import TrainConfig, run_train
from mrisynth.generate.sd_load import resolve_model_dir
from sd_tiny import save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


def tiny_cfg(model: Path, **changes) -> TrainConfig:
    # 16 px images: 8x8 latents through the tiny VAE, the least work that still exercises every part.
    return from_dict(TrainConfig, {**preset_values(TrainConfig, "tiny"), "model": str(model), "size": 16, **changes})


def test_full_finetune_saves_a_loadable_pipeline(tiny_model, tiny_manifest_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    gen = run_train(tiny_cfg(tiny_model, mode="full", lr=1e-3, sample_every=2), data_dir=tiny_manifest_dir,
                    out_dir=tmp_path / "gen")
    info = read_generator_info(gen)
    assert info["backend"] == "sd" and info["mode"] == "full"
    assert info["classes"] == ["glioma", "meningioma", "pituitary"]
    assert Path(info["data_dir"]) == tiny_manifest_dir.resolve()
    assert "{cls}" in info["prompt_template"]
    # The result loads in a stock diffusers pipeline, and its UNet moved away from the base weights.
    pipe = StableDiffusionPipeline.from_pretrained(gen / "pipeline", local_files_only=True)
    base = load_file(tiny_model / "unet" / "diffusion_pytorch_model.safetensors")
    tuned = pipe.unet.state_dict()
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    assert [r["step"] for r in read_jsonl(gen / "metrics.jsonl")] == [1, 2]
    assert all(r["loss"] > 0 for r in read_jsonl(gen / "metrics.jsonl"))
    assert (gen / "samples" / "grid-0000002.png").is_file()
    assert (gen / "config.yaml").is_file()
    # Latents were cached for the train split only (2 patients x 3 slices x 3 classes), flipped too.
    train_ids = [r.id for r in select(load_manifest(tiny_manifest_dir), split="train")]
    with safe_open(str(gen / "cache" / "latents-16.safetensors"), framework="pt") as f:
        assert f.get_slice("latents").get_shape()[0] == len(train_ids) == 18
        assert f.get_slice("latents_flip").get_shape()[0] == 18
        assert f.get_slice("prompt_embeds").get_shape()[0] == 4  # 3 classes + the empty prompt


def test_lora_finetune_keeps_the_base_and_loads_as_lora(tiny_model, tiny_manifest_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    gen = run_train(tiny_cfg(tiny_model, mode="lora"), data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    assert read_generator_info(gen)["mode"] == "lora"
    assert not (gen / "pipeline").exists()
    weights = load_file(gen / "lora" / "pytorch_lora_weights.safetensors")
    assert weights and all(k.startswith("unet.") and "lora" in k for k in weights)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.load_lora_weights(gen / "lora")  # the standard diffusers way to apply it
    assert pipe.unet.peft_config


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_model, tiny_manifest_dir, tmp_path, monkeypatch):
    whole = run_train(tiny_cfg(tiny_model, steps=2), data_dir=tiny_manifest_dir, out_dir=tmp_path / "whole")
    split_dir = tmp_path / "split"
    run_train(tiny_cfg(tiny_model, steps=1), data_dir=tiny_manifest_dir, out_dir=split_dir)  # "stopped" after step 1
    assert [p.name for p in (split_dir / "checkpoints").iterdir()] == ["step-0000001"]

    calls = []
    monkeypatch.setattr(latents_mod, "encode_images", lambda *a, **k: calls.append(1))
    resumed = run_train(tiny_cfg(tiny_model, steps=2), data_dir=tiny_manifest_dir, out_dir=split_dir)
    assert calls == []  # the cached latents were reused: the VAE did not run again
    a = load_file(whole / "lora" / "pytorch_lora_weights.safetensors")
    b = load_file(resumed / "lora" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    # Same up to CPU float noise (the first backward of a process may pick other kernels: ~1e-7). A resume that lost
    # the optimizer state or replayed other batches moves LoRA weights by ~lr = 1e-3 and fails this.
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert [r["step"] for r in read_jsonl(split_dir / "metrics.jsonl")] == [1, 2]


def test_resume_refuses_other_settings_and_keeps_the_saved_config(tiny_model, tiny_manifest_dir, tmp_path):
    gen = tmp_path / "gen"
    run_train(tiny_cfg(tiny_model, steps=1), data_dir=tiny_manifest_dir, out_dir=gen)
    config = (gen / "config.yaml").read_text()
    with pytest.raises(UserError, match="lr: 0.001 then, 0.5 now"):
        run_train(tiny_cfg(tiny_model, steps=2, lr=0.5), data_dir=tiny_manifest_dir, out_dir=gen)
    assert (gen / "config.yaml").read_text() == config  # checked before anything was written
    # The checkpoint's fingerprint still guards what config.yaml does not hold (the data folder).
    other_data = tmp_path / "other-data"
    shutil.copytree(tiny_manifest_dir, other_data)
    with pytest.raises(UserError, match="other settings"):
        run_train(tiny_cfg(tiny_model, steps=2), data_dir=other_data, out_dir=gen)
    assert (gen / "config.yaml").read_text() == config


def test_the_latent_cache_follows_the_pixels_not_only_the_ids(tiny_model, tmp_path):
    """A data folder prepared again (same ids, other pixels) must not train on the old images' latents."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    path = tmp_path / "latents-16.safetensors"

    def build(imgs: np.ndarray) -> dict:
        return latents_mod.load_or_build_train_latents(
            path, model_dir=tiny_model, images=imgs, ids=["a", "b", "c"], prompts=["p"], flip=False,
            device=torch.device("cpu"))

    first = build(images)
    stamp = path.stat().st_mtime_ns
    assert torch.equal(build(images.copy())["latents"], first["latents"])
    assert path.stat().st_mtime_ns == stamp  # same pixels: read back, not rebuilt
    changed = images.copy()
    changed[1] = 255 - changed[1]
    again = build(changed)
    assert path.stat().st_mtime_ns != stamp
    assert torch.equal(again["latents"][0], first["latents"][0])
    assert not torch.equal(again["latents"][1], first["latents"][1])  # the new pixels were encoded


def test_missing_model_folder_is_a_clear_error(tmp_path, tiny_manifest_dir, capsys):
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nowhere"))
    code = main(["generator", "train", "--backend", "sd", "--data", str(tiny_manifest_dir),
                 "--out", str(tmp_path / "gen"), "--model", str(tmp_path / "nowhere"), "--preset", "tiny"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "huggingface-cli download" in err and "Traceback" not in err


def test_hub_ids_resolve_from_the_local_cache_only(tiny_model, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"models--someone--absent.*huggingface-cli download someone/absent"):
        resolve_model_dir("someone/absent")
    # A snapshot laid out as the hub client stores it is found without any network access.
    repo = tmp_path / "hub" / "models--someone--tiny"
    shutil.copytree(tiny_model, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve_model_dir("someone/tiny") == (repo / "snapshots" / "abc123").resolve()


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(UserError, match="unet/config.json"):
        resolve_model_dir(str(tmp_path / "model"))


def test_bad_settings_are_user_errors(tiny_model, tiny_manifest_dir, tmp_path):
    with pytest.raises(UserError, match="prompt_template"):
        run_train(tiny_cfg(tiny_model, prompt_template="no class here"), data_dir=tiny_manifest_dir,
                  out_dir=tmp_path / "gen")
    with pytest.raises(UserError, match="multiple of 8"):
        run_train(tiny_cfg(tiny_model, size=30), data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    with pytest.raises(UserError, match="lora_targets"):
        run_train(tiny_cfg(tiny_model, lora_targets=["no_such_layer"]), data_dir=tiny_manifest_dir,
                  out_dir=tmp_path / "gen2")


def test_generator_json_is_written_last(tiny_model, tiny_manifest_dir, tmp_path, monkeypatch):
    """A crash while saving the weights leaves no generator.json, so sampling refuses the half-made folder."""
    from mrisynth.generate import sd_train

    def crash(*args, **kwargs):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(sd_train, "save_lora", crash)
    with pytest.raises(RuntimeError):
        run_train(tiny_cfg(tiny_model, steps=1), data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    assert not (tmp_path / "gen" / "generator.json").exists()
    with pytest.raises(UserError, match="not a trained generator"):
        read_generator_info(tmp_path / "gen")


def test_ema_and_gradient_checkpointing(tiny_model, tiny_manifest_dir, tmp_path):
    """With EMA on, the saved LoRA is the moving average (not the last weights), and resume keeps the average."""
    cfg = tiny_cfg(tiny_model, ema=True, ema_decay=0.5, gradient_checkpointing=True)
    gen = run_train(cfg, data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    ckpt = gen / "checkpoints" / "step-0000002"
    raw = load_file(ckpt / "weights.safetensors")
    ema = load_file(ckpt / "ema.safetensors")
    saved = load_file(gen / "lora" / "pytorch_lora_weights.safetensors")
    lora_b = [k for k in raw if "lora_B" in k]  # lora_B starts at zero, so both steps move it
    assert lora_b and not torch.equal(raw[lora_b[0]], ema[lora_b[0]])
    # The saved adapter holds the EMA values (diffusers renames the keys: compare the sorted value sets).
    saved_values = sorted(float(v.abs().sum()) for v in saved.values())
    ema_values = sorted(float(v.abs().sum()) for v in ema.values())
    assert saved_values == pytest.approx(ema_values)


def test_fine_tuning_lowers_the_denoising_loss(tiny_model, tiny_manifest_dir, tmp_path):
    """The same held-out noise draws (steps 1000-1003) score better after 12 full-UNet steps than before."""
    from safetensors.torch import load_file as load_tensors

    from mrisynth.generate.sd_load import load_scheduler_config, load_unet
    from mrisynth.generate.sd_train import _loss, _noise_schedule

    cfg = tiny_cfg(tiny_model, mode="full", lr=1e-3, steps=12, batch_size=6, checkpoint_every=12, flip=False)
    gen = run_train(cfg, data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    data = load_tensors(gen / "cache" / "latents-16.safetensors")
    labels = torch.tensor([r.label for r in select(load_manifest(tiny_manifest_dir), split="train")])
    sched = _noise_schedule(load_scheduler_config(tiny_model))

    def mean_loss(unet) -> float:
        with torch.no_grad():
            return sum(_loss(unet, sched, data, labels, cfg, step=s, device=torch.device("cpu")).item()
                       for s in range(1000, 1004)) / 4

    before = mean_loss(load_unet(tiny_model))
    after = mean_loss(load_unet(gen / "pipeline"))
    assert after < before * 0.9


def test_a_damaged_latent_cache_is_rebuilt(tiny_model, tiny_manifest_dir, tmp_path):
    gen = tmp_path / "gen"
    run_train(tiny_cfg(tiny_model, steps=1), data_dir=tiny_manifest_dir, out_dir=gen)
    (gen / "cache" / "latents-16.safetensors").write_bytes(b"not a safetensors file")
    run_train(tiny_cfg(tiny_model, steps=2), data_dir=tiny_manifest_dir, out_dir=gen)  # the resumed run rebuilds it
    with safe_open(str(gen / "cache" / "latents-16.safetensors"), framework="pt") as f:
        assert f.get_slice("latents").get_shape()[0] == 18


def test_lora_alpha_survives_save_and_load(tiny_model, tiny_manifest_dir, tmp_path):
    """With alpha != rank the adapter used to reload at scale 1 (here 1/4 of the trained effect)."""
    from mrisynth.checkpoint import load_weights
    from mrisynth.generate.sd_load import add_lora, load_generator_unet, load_unet

    cfg = tiny_cfg(tiny_model, lora_rank=4, lora_alpha=16, lr=1e-2)
    gen = run_train(cfg, data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen")
    trained = load_unet(tiny_model)
    add_lora(trained, rank=4, alpha=16, targets=list(cfg.lora_targets))
    trained.load_state_dict(load_weights(gen / "checkpoints" / "step-0000002" / "weights.safetensors"), strict=False)
    reloaded = load_generator_unet(gen, read_generator_info(gen), dtype=torch.float32)
    base = load_unet(tiny_model)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = [m.eval()(x, 500, encoder_hidden_states=cond).sample for m in (trained, reloaded, base)]
    assert (outs[0] - outs[2]).abs().max() > 1e-3  # the adapter does something
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)


def test_ema_is_warmed_up(tiny_model, tiny_manifest_dir, tmp_path):
    """Without warm-up an EMA of decay 0.999 held 99.8% of the untuned start after 2 steps."""
    gen = run_train(tiny_cfg(tiny_model, ema=True, ema_decay=0.999), data_dir=tiny_manifest_dir,
                    out_dir=tmp_path / "gen")
    ckpt = gen / "checkpoints" / "step-0000002"
    raw, ema = load_file(ckpt / "weights.safetensors"), load_file(ckpt / "ema.safetensors")
    lora_b = [k for k in raw if "lora_B" in k]  # lora_B starts at 0: its EMA is the share of tuning kept
    ratio = sum(ema[k].abs().sum() for k in lora_b) / sum(raw[k].abs().sum() for k in lora_b)
    assert ratio > 0.5


def _edit_json(path: Path, **changes) -> None:
    import json

    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("part, changes, why", [
    ("unet/config.json", {"addition_embed_type": "text_time"}, "SDXL"),
    ("scheduler/scheduler_config.json", {"prediction_type": "sample"}, "predicts 'sample'"),
    ("unet/config.json", {"in_channels": 9}, "inpainting"),
])
def test_model_folders_this_backend_cannot_use_are_refused(tiny_model, tmp_path, part, changes, why):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    _edit_json(model / part, **changes)
    with pytest.raises(UserError, match=why):
        resolve_model_dir(str(model))


def test_unloadable_weights_are_one_line_errors(tiny_model, tiny_manifest_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated download
    code = main(["generator", "train", "--backend", "sd", "--data", str(tiny_manifest_dir), "--out",
                 str(tmp_path / "gen"), "--model", str(model), "--set", "steps=1", "--set", "size=16"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load the UNet" in err and "Traceback" not in err
    shutil.rmtree(model / "vae")
    with pytest.raises(UserError, match="has no vae/config.json"):
        resolve_model_dir(str(model))


def test_grids_and_validation_use_the_sampling_recipe(tiny_model, tiny_manifest_dir, tmp_path, monkeypatch):
    from mrisynth.generate import sd_preview

    recipes, seen = [], []
    real = sd_preview.build_sampler

    def spy(unet, vae, embeds, model_dir, cfg, *, size):
        recipes.append((cfg.steps, cfg.scheduler, cfg.guidance))
        return real(unet, vae, embeds, model_dir, cfg, size=size)

    monkeypatch.setattr(sd_preview, "build_sampler", spy)

    def validate(images, labels):
        seen.append(labels.tolist())
        return {"val_tstr_acc": 0.5}

    cfg = tiny_cfg(tiny_model, sample_every=2, val_every=1, val_per_class=1, sample_preset="turbo")
    gen = run_train(cfg, data_dir=tiny_manifest_dir, out_dir=tmp_path / "gen", validate=validate)
    assert recipes == [(1, "euler_ancestral", 1.0)] * 2  # steps 1 and 2 (grid and validation share step 2)
    assert seen == [[0, 1, 2], [0, 1, 2]]
    val = [(r["step"], r["val_tstr_acc"]) for r in read_jsonl(gen / "metrics.jsonl") if "val_tstr_acc" in r]
    assert val == [(1, 0.5), (2, 0.5)]
    assert (gen / "samples" / "grid-0000002.png").is_file()


def test_resume_on_a_changed_train_split_is_refused(tiny_model, tiny_manifest_dir, tmp_path):
    from mrisynth.data.manifest import save_manifest

    gen = tmp_path / "gen"
    run_train(tiny_cfg(tiny_model, steps=1), data_dir=tiny_manifest_dir, out_dir=gen)
    rows = load_manifest(tiny_manifest_dir)
    next(r for r in rows if r.split == "train").split = "test"
    save_manifest(rows, tiny_manifest_dir / "manifest.csv")
    with pytest.raises(UserError, match="another train split"):
        run_train(tiny_cfg(tiny_model, steps=2), data_dir=tiny_manifest_dir, out_dir=gen)
