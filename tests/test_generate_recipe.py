"""Rules both generator backends share (guidance, EMA warm-up, Min-SNR, offset noise, counts), the DDPM's
guidance and label dropout, its epsilon sampler's conditioning, and the background PNG writer."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from mrisynth.data.images import save_grayscale_png
from mrisynth.data.manifest import ImageRecord
from mrisynth.errors import UserError
from mrisynth.files import append_jsonl
from mrisynth.generate import ddpm
from mrisynth.generate.ddpm_model import build_noise_scheduler, build_sampler, denoise
from mrisynth.generate.ddpm_train import TrainingData, draw_batch
from mrisynth.generate.output import SyntheticWriter, synthetic_id
from mrisynth.generate.recipe import (
    check_guidance,
    ema_decay_at,
    min_snr_weights,
    offset_noise,
    per_class_counts,
)


def test_guidance_below_one_is_refused_and_one_or_more_accepted():
    for bad in (0.0, 0.5, -1.0, float("nan")):
        with pytest.raises(UserError, match="guidance must be 1"):
            check_guidance(bad)
    check_guidance(1.0)
    check_guidance(7.5)


def test_ema_warm_up_values():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(100_000, 0.999) == 0.999


def test_min_snr_weights_for_epsilon_and_v():
    alphas = torch.tensor([0.9, 0.5, 0.1])  # SNR 9, 1, 1/9
    t = torch.tensor([0, 1, 2])
    eps = min_snr_weights(alphas, t, gamma=5.0, prediction_type="epsilon")
    v = min_snr_weights(alphas, t, gamma=5.0, prediction_type="v_prediction")
    torch.testing.assert_close(eps, torch.tensor([5 / 9, 1.0, 1.0]))
    torch.testing.assert_close(v, torch.tensor([5 / 10, 1 / 2, (1 / 9) / (10 / 9)]))


def test_offset_noise_shifts_whole_channels_and_draws_nothing_when_off():
    gen = torch.Generator().manual_seed(0)
    noise = torch.zeros(2, 3, 4, 4)
    state = gen.get_state()
    assert offset_noise(noise, 0.0, generator=gen) is noise
    assert torch.equal(gen.get_state(), state)  # streams of runs without the option stay as they were
    shifted = offset_noise(noise, 0.1, generator=gen)
    per_channel = shifted.flatten(2)
    assert torch.equal(per_channel, per_channel[..., :1].expand_as(per_channel))  # constant over pixels
    assert per_channel[..., 0].abs().max() > 0


def test_per_class_counts():
    assert per_class_counts(["a", "b"], n_per_class=3, counts={}) == {"a": 3, "b": 3}
    assert per_class_counts(["a", "b"], n_per_class=3, counts={"b": 5}) == {"a": 0, "b": 5}
    with pytest.raises(UserError, match="whole numbers"):
        per_class_counts(["a"], n_per_class=1, counts={"a": -1})


# ----------------------------------------------------------------------------------------------- DDPM guidance

class _ConstantUNet(torch.nn.Module):
    """Predicts 1.0 for any real class and 0.25 for the "no class" label; records the labels of each call."""

    def __init__(self, n_classes: int = 2) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.config = types.SimpleNamespace(num_class_embeds=n_classes + 1, in_channels=1)
        self.calls: list[list[int]] = []

    def forward(self, x, t, class_labels):
        self.calls.append(class_labels.tolist())
        null = class_labels == self.config.num_class_embeds - 1
        out = torch.where(null[:, None, None, None], 0.25, 1.0).expand_as(x)
        return types.SimpleNamespace(sample=out + 0 * self.weight)


class _RecordingSampler:
    """One step that returns the model output it was given (so denoise's guided output is observable)."""

    init_noise_sigma = 1.0
    timesteps = torch.tensor([999])

    def set_timesteps(self, steps, device=None):
        pass

    def scale_model_input(self, x, t):
        return x

    def step(self, out, t, x):
        self.out = out
        return types.SimpleNamespace(prev_sample=out)


def test_guidance_formula_is_uncond_plus_scale_times_difference():
    unet, sampler = _ConstantUNet(), _RecordingSampler()
    denoise(unet, sampler, torch.tensor([0, 1]), torch.zeros(2, 1, 4, 4), steps=1, guidance=3.0)
    # 0.25 + 3 * (1.0 - 0.25) = 2.5: the conditional half against the "no class" half, in one batch.
    torch.testing.assert_close(sampler.out, torch.full((2, 1, 4, 4), 2.5))
    assert unet.calls == [[0, 1, 2, 2]]
    unet.calls.clear()
    denoise(unet, sampler, torch.tensor([0, 1]), torch.zeros(2, 1, 4, 4), steps=1, guidance=1.0)
    torch.testing.assert_close(sampler.out, torch.ones(2, 1, 4, 4))  # 1 = the conditional model alone
    assert unet.calls == [[0, 1]]
    with pytest.raises(UserError, match="guidance must be 1"):
        denoise(unet, sampler, torch.tensor([0]), torch.zeros(1, 1, 4, 4), steps=1, guidance=0.0)


def test_label_dropout_replaces_the_configured_share_of_labels(tmp_path):
    unguided = tmp_path / "unguided.yaml"
    unguided.write_text("guidance: 1.0\n")  # p_uncond 0 trains no unconditional model: only unguided sampling
    data = TrainingData(images=torch.zeros(10, 1, 4, 4, dtype=torch.uint8), labels=torch.zeros(10, dtype=torch.int64),
                        classes=["a", "b"])
    cfg = ddpm.TrainConfig(batch_size=2000, p_uncond=0.3)
    _, labels = draw_batch(data, cfg, rng=torch.Generator().manual_seed(0))
    share = (labels == 2).float().mean().item()  # 2 = the "no class" label of a 2-class model
    assert 0.27 < share < 0.33
    cfg = dataclasses.replace(cfg, p_uncond=0.0, sample_preset=str(unguided))
    _, labels = draw_batch(data, cfg, rng=torch.Generator().manual_seed(0))
    assert (labels == 2).sum() == 0


def test_epsilon_dpm_solver_first_step_is_well_conditioned():
    """At t=999 of the cosine schedule alpha is 5e-5: a 0.01 error of an epsilon model moved the first
    DPM-Solver++ step by 31 before its clean-image estimate was clipped to [-1, 1]."""
    config = build_noise_scheduler(ddpm.TrainConfig(prediction_type="epsilon")).config
    alphas = build_noise_scheduler(ddpm.TrainConfig(prediction_type="epsilon")).alphas_cumprod
    x0 = torch.full((2, 1, 8, 8), 0.5)
    outs = []
    for error in (0.0, 0.01):
        sampler = build_sampler("dpm++", config)
        sampler.set_timesteps(10)
        x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * sampler.init_noise_sigma
        t = sampler.timesteps[0]
        eps = (x - alphas[t].sqrt() * x0) / (1 - alphas[t]).sqrt()  # the ideal epsilon model
        outs.append(sampler.step(eps + error, t, x).prev_sample)
    assert (outs[1] - outs[0]).abs().max() < 1.0


# ----------------------------------------------------------------------------------------------- writer

def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(12, 12), dtype=np.uint8) for _ in range(n)]


def _write(out, images, *, batch: int) -> SyntheticWriter:
    writer = SyntheticWriter(out, ["a", "b"], generator_sha256="abc")
    for i, image in enumerate(images):
        writer.add(image, image_id=synthetic_id("b", i), class_name="b", seed=i, steps=3, guidance=2.0)
        if (i + 1) % batch == 0:
            writer.end_batch()
    return writer


def test_background_writer_writes_the_bytes_an_in_line_writer_writes(tmp_path):
    images = _images(7)
    _write(tmp_path / "bg" / "syn", images, batch=3).finish()
    # The in-line reference: each PNG saved, then its provenance line appended, one by one.
    ref = tmp_path / "ref" / "syn"
    (ref / "b").mkdir(parents=True)
    for i, image in enumerate(images):
        path = ref / "b" / f"{synthetic_id('b', i)}.png"
        save_grayscale_png(image, path)
        append_jsonl(ref / ".provenance.jsonl", dataclasses.asdict(ImageRecord(
            id=synthetic_id("b", i), path=str(path.resolve()), class_name="b", label=1, width=12, height=12,
            source="synthetic", seed=i, steps=3, guidance=2.0, generator_sha256="abc", split="train")))
    bg = tmp_path / "bg" / "syn"
    for i in range(7):
        name = f"b/{synthetic_id('b', i)}.png"
        assert (bg / name).read_bytes() == (ref / name).read_bytes()
    sidecar = (bg / ".provenance.jsonl").read_text().replace(str(tmp_path / "bg"), str(tmp_path / "ref"))
    assert sidecar == (ref / ".provenance.jsonl").read_text()


def test_a_killed_writer_has_recorded_only_finished_batches(tmp_path):
    out = tmp_path / "syn"
    writer = _write(out, _images(4), batch=2)  # two batches closed: the first recorded, the second in flight
    writer.close()  # killed here: the second batch's PNGs may exist, but their provenance is not recorded
    again = SyntheticWriter(out, ["a", "b"], generator_sha256="abc")
    assert again.existing_ids() == {synthetic_id("b", 0), synthetic_id("b", 1)}
    again.close()
