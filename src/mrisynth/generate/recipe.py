"""Training and sampling rules both generator backends share, so that a setting means the same thing in each.

    check_guidance     1 = off (the conditional model alone), > 1 = classifier-free guidance, < 1 refused
    ema_decay_at       EMA warm-up: the decay ramps from 0 so a short run's average is not the untuned start
    min_snr_weights    Min-SNR-gamma loss weights (Hang et al. 2023), per sample, for each prediction type
    offset_noise       noise with a per-image, per-channel constant added (helps all-black backgrounds)
    per_class_counts   how many images of each class a sampler is asked for
    training_set_fingerprint   what a run learned from, so a resume on another split is refused
    sample_recipe      the SampleConfig of a shipped sampling preset, which previews and validation draw with
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mrisynth.config import load_config
from mrisynth.errors import UserError
from mrisynth.files import sha256_array


def check_guidance(guidance: float) -> None:
    """Refuse guidance scales below 1: at 0 a guided sampler draws unconditional images that are then labelled
    by class. 1 means "off" (one conditional pass per step) in both backends; for SD-Turbo's model card
    `guidance_scale=0.0` write 1 here."""
    if not guidance >= 1.0:  # also refuses NaN
        raise UserError(
            f"guidance must be 1 (off: the conditional model alone) or more (classifier-free guidance); got "
            f"{guidance}. Below 1 the images stop following their class label (SD-Turbo's guidance_scale=0 is 1 here)"
        )


def uses_guidance(guidance: float) -> bool:
    """Classifier-free guidance runs only above 1 (at exactly 1 it equals the conditional model alone)."""
    return guidance > 1.0


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay for update number `step` (0-based): min(decay, (1 + step) / (10 + step)).

    Without the ramp an EMA of decay 0.999 still holds 0.999**500 = 61% of the untuned weights after 500 steps.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, *, gamma: float, prediction_type: str) -> torch.Tensor:
    """(B,) loss weights of Min-SNR-gamma: min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v.

    Both equal the paper's min(SNR, gamma) weight on the x0 error, expressed for the target the model predicts.
    """
    alpha_bar = alphas_cumprod.to(t.device)[t].float()
    snr = alpha_bar / (1.0 - alpha_bar)
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise UserError(f"min-SNR weighting supports epsilon and v_prediction models, not {prediction_type}")


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error; with (B,) `weights`, each sample's mean error is weighted before averaging."""
    if weights is None:
        return torch.nn.functional.mse_loss(pred.float(), target.float())
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return (per_sample * weights).mean()


def offset_noise(noise: torch.Tensor, offset: float, *, generator: torch.Generator) -> torch.Tensor:
    """noise + offset * n, with n ~ N(0, 1) drawn once per (image, channel) and spread over the pixels.

    Plain noise has almost no power at zero frequency, so a model never learns to shift a whole image's mean;
    MRI slices are mostly black background. Draws nothing from `generator` when offset is 0 (streams unchanged).
    """
    if offset == 0.0:
        return noise
    shift = torch.randn((noise.shape[0], noise.shape[1], 1, 1), generator=generator, device=generator.device)
    return noise + offset * shift.to(noise.device, noise.dtype)


def per_class_counts(classes: Sequence[str], *, n_per_class: int, counts: Mapping[str, int] | None) -> dict[str, int]:
    """Images to draw per class, in class order: `counts` where given (others 0), else `n_per_class` for each."""
    if not counts:
        return {c: n_per_class for c in classes}
    unknown = sorted(set(counts) - set(classes))
    if unknown:
        raise UserError(f"counts names class '{unknown[0]}', which the generator does not know; use {', '.join(classes)}")
    bad = {c: n for c, n in counts.items() if not isinstance(n, int) or n < 0}
    if bad:
        raise UserError(f"counts must be whole numbers of 0 or more; got {bad}")
    return {c: int(counts.get(c, 0)) for c in classes}


def training_set_fingerprint(ids: Sequence[str], labels: Sequence[int], images: np.ndarray) -> str:
    """A hash of what a run learns from: the train split's ids, labels and pixels (a re-prepared split differs)."""
    h = hashlib.sha256(json.dumps([list(map(str, ids)), [int(x) for x in labels]]).encode())
    h.update(sha256_array(images).encode())
    return h.hexdigest()[:16]


def sample_recipe(sample_config: type, preset: str) -> object:
    """The backend's SampleConfig of a shipped sampling preset ("" = its defaults): the recipe that training
    previews and validation draw with, so they show what the real sampling run will give."""
    return load_config(sample_config, preset=preset or None)
