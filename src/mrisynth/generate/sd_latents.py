"""The VAE and the text encoder, run once: image latents and prompt embeddings, cached as safetensors.

MRI is one channel; the VAE wants three. On the way in the grey channel is replicated; on the way out the three
decoded channels are averaged, so no colour cast can reach a saved PNG.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from mrisynth.errors import UserError
from mrisynth.files import atomic_path, sha256_array

if TYPE_CHECKING:  # annotations only: importing diffusers/transformers costs seconds
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

log = logging.getLogger(__name__)


def class_prompts(template: str, classes: Sequence[str]) -> list[str]:
    """One prompt per class from a template with `{cls}` (underscores read as spaces)."""
    return [template.format(cls=c.replace("_", " ")) for c in classes]


@torch.no_grad()
def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: Sequence[str], *,
                   device: torch.device) -> torch.Tensor:
    """Text-encoder hidden states of each prompt, padded to the tokenizer's length: (P, L, D) float32 on the CPU."""
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    )
    text_encoder.to(device)
    hidden = text_encoder(tokens.input_ids.to(device))[0]
    return hidden.float().cpu()


def non_finite_message(where: str) -> str:
    """The one-line error for NaN/Inf images: half precision overflowed; say what to use instead."""
    return (f"{where} produced NaN/Inf values (a half-precision overflow); the batch was not saved: rerun with "
            "--set precision=fp32 (or bf16 on a GPU that has it)")


def _scale_shift(vae: AutoencoderKL) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def to_vae_input(images: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 3, H, W) in [-1, 1], the grey channel replicated."""
    x = images.to(dtype).div(127.5).sub(1.0)
    return x.unsqueeze(1).expand(-1, 3, -1, -1)


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: np.ndarray, *, device: torch.device, batch_size: int = 16, flip: bool = False,
                  progress: bool = True) -> torch.Tensor:
    """Scaled VAE latents of uint8 images (N, H, W): (N, C, H/f, W/f) float32 on the CPU.

    The posterior mean is used, not a sample: the SD VAE's posterior std is tiny, and the mean makes the cache
    deterministic.
    """
    scale, shift = _scale_shift(vae)
    dtype = next(vae.parameters()).dtype
    vae.to(device)
    out = []
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc="encode latents", leave=False, disable=not progress):
        batch = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
        if flip:
            batch = batch.flip(-1)
        mean = vae.encode(to_vae_input(batch, dtype=dtype)).latent_dist.mean
        out.append(((mean - shift) * scale).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, *, batch_size: int = 0) -> np.ndarray:
    """Latents (B, C, h, w) -> grey uint8 images (B, H, W): the decoded RGB channels averaged."""
    scale, shift = _scale_shift(vae)
    dtype = next(vae.parameters()).dtype
    step = batch_size or len(latents)
    out = []
    for i in range(0, len(latents), step):
        rgb = vae.decode(latents[i:i + step].to(dtype) / scale + shift).sample  # (b, 3, H, W) in ~[-1, 1]
        if not torch.isfinite(rgb).all():  # NaN would become a black PNG saved under a tumour label
            raise UserError(non_finite_message("VAE decoding"))
        grey = rgb.float().mean(dim=1).clamp(-1, 1)
        out.append(grey.add(1).mul(127.5).round().to(torch.uint8).cpu())
    return torch.cat(out).numpy()


def load_or_build_train_latents(
    path: Path,
    *,
    model_dir: Path,
    images: np.ndarray,  # (N, S, S) uint8: the training images
    ids: Sequence[str],
    prompts: Sequence[str],
    flip: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Latents (and flipped latents) of the training images plus prompt embeddings, computed once.

    Returns {"latents": (N, C, h, w), ["latents_flip": same], "prompt_embeds": (P + 1, L, D)}; the last prompt
    embedding is the empty prompt (caption dropout / unconditional). The file is rebuilt when any input changes,
    pixels included (a data folder prepared again under the same ids is not the same training set).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    key = _cache_key(model_dir, images, ids, prompts, flip)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return {name: f.get_tensor(name) for name in f.keys()}
            log.info("latent cache %s is stale; rebuilding", path)
        except Exception as exc:  # a damaged file is only a cache: recompute it
            log.warning("latent cache %s is unreadable (%s); rebuilding", path, exc)
    from mrisynth.generate.sd_load import load_text_stack, load_vae

    tokenizer, text_encoder = load_text_stack(model_dir)
    tensors = {"prompt_embeds": encode_prompts(tokenizer, text_encoder, [*prompts, ""], device=device)}
    del tokenizer, text_encoder
    vae = load_vae(model_dir)
    tensors["latents"] = encode_images(vae, images, device=device)
    if flip:
        tensors["latents_flip"] = encode_images(vae, images, device=device, flip=True)
    del vae
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"key": key})
    log.info("cached %d latents and %d prompt embeddings in %s", len(images), len(prompts) + 1, path)
    return tensors


def _cache_key(model_dir: Path, images: np.ndarray, ids: Sequence[str], prompts: Sequence[str], flip: bool) -> str:
    # The VAE's weights are identified by their file's size and mtime (hashing gigabytes on every run would not pay).
    weights = sorted((model_dir / "vae").glob("*.safetensors")) + sorted((model_dir / "text_encoder").glob("*"))
    stamp = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in weights if p.is_file()]
    # The images themselves are hashed (3,064 x 256 x 256 uint8 = 200 MB: well under a second), so pixels that
    # changed under the same ids (a re-prepared data folder) rebuild the cache.
    pixels = sha256_array(images)
    blob = json.dumps([str(model_dir), stamp, list(images.shape), pixels, list(ids), list(prompts), flip])
    return hashlib.sha256(blob.encode()).hexdigest()
