"""A tiny random-init Stable Diffusion pipeline saved with `save_pretrained`, for tests (and `bench --tiny`).

It has the same folder layout as a real SD-family model (unet/, vae/, text_encoder/, tokenizer/, scheduler/,
model_index.json), so tests load it back through the real loading path with `model=<dir>`. Everything is built
in code: the tokenizer's vocabulary is the 256 byte symbols plus a few merges, written here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

# GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points from 256 up.
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def _byte_symbols() -> list[str]:
    extra = 0
    symbols = []
    for b in range(256):
        if b in _PRINTABLE:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def write_tiny_tokenizer_files(directory: str | Path) -> Path:
    """Write vocab.json + merges.txt of a CLIP BPE over single bytes plus a few merges; returns `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    merges = [("b", "r"), ("br", "a"), ("bra", "i"), ("brai", "n</w>"), ("m", "r"), ("mr", "i</w>")]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def build_tiny_tokenizer(max_length: int = 77):
    """A CLIPTokenizer read back from the files `write_tiny_tokenizer_files` writes."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = CLIPTokenizer.from_pretrained(write_tiny_tokenizer_files(tmp), local_files_only=True)
    tok.model_max_length = max_length
    return tok


def build_tiny_components(*, seed: int = 0, latent_channels: int = 4) -> dict:
    """UNet (channels 32/64, cross-attention 32), 2-level VAE (x2 downsampling), 2-layer CLIP text encoder."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=latent_channels, out_channels=latent_channels, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=32,
    )
    tokenizer = build_tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    # SD-Turbo ships an Euler scheduler with trailing spacing and epsilon prediction; mirror that.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def save_tiny_pipeline(path: str | Path, *, seed: int = 0) -> Path:
    """Write a complete tiny StableDiffusionPipeline folder to `path` and return it."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **build_tiny_components(seed=seed), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return Path(path)

