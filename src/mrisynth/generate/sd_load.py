"""Finding an SD-family model offline, loading its parts one by one, and saving a fine-tuned result.

The hub is never contacted: a model id is looked up in the local Hugging Face cache only, and every
`from_pretrained` gets `local_files_only=True`. Parts are loaded separately so that training holds only the UNet
(the VAE and text encoder run once, to fill the latent cache, and are then dropped).

A trained generator folder:

    GEN/generator.json      backend, data_dir, classes, base_model, prompt_template, mode, size
    GEN/pipeline/           mode=full: a complete diffusers pipeline folder (StableDiffusionPipeline.from_pretrained)
    GEN/lora/               mode=lora: pytorch_lora_weights.safetensors (pipe.load_lora_weights on the base model)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mrisynth.errors import UserError
from mrisynth.files import atomic_path, sha256_dir

if TYPE_CHECKING:  # annotations only: importing diffusers/transformers costs seconds
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

log = logging.getLogger(__name__)

PIPELINE_DIR = "pipeline"
LORA_DIR = "lora"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def resolve_model_dir(model: str) -> Path:
    """A local pipeline folder for `model` (a folder path or a Hugging Face id already in the local cache)."""
    path = Path(model).expanduser()
    looks_like_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1
    if path.exists():
        model_dir = path
    elif looks_like_path:
        raise UserError(
            f"model folder {path} does not exist; pass --model with a diffusers pipeline folder "
            f"(e.g. from `huggingface-cli download stabilityai/sd-turbo --local-dir DIR`)"
        )
    else:
        model_dir = _cached_snapshot(model)
    if not (model_dir / "unet" / "config.json").is_file():
        raise UserError(
            f"{model_dir} is not a diffusers Stable Diffusion folder (no unet/config.json); "
            "pass --model with a folder holding unet/, vae/, text_encoder/, tokenizer/ and scheduler/"
        )
    return model_dir.resolve()


def _cached_snapshot(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError and friends: anything means "not usable offline"
        expected = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
        raise UserError(
            f"model '{repo_id}' is not in the local Hugging Face cache ({expected}) and mrisynth never downloads "
            f"on its own; where there is internet run `huggingface-cli download {repo_id} --local-dir DIR` "
            "(newer clients: `hf download ...`), copy DIR here and pass --model DIR"
        ) from exc


def load_unet(
    model_dir: str | os.PathLike, *, subfolder: str = "unet", dtype: torch.dtype = torch.float32
) -> UNet2DConditionModel:
    """The denoising UNet (UNet2DConditionModel)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(
        model_dir, subfolder=subfolder, torch_dtype=dtype, local_files_only=True
    )


def load_vae(model_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """The autoencoder, frozen (it only encodes once and decodes samples)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae", torch_dtype=dtype, local_files_only=True)
    return vae.requires_grad_(False).eval()


def load_text_stack(model_dir: str | os.PathLike) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """(tokenizer, text encoder), frozen: prompts are encoded once per class."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder", local_files_only=True)
    return tokenizer, encoder.requires_grad_(False).eval()


def load_scheduler_config(model_dir: str | os.PathLike) -> dict:
    """The model's scheduler config (noise schedule and prediction type), whatever scheduler class it names."""
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(model_dir, subfolder="scheduler", local_files_only=True))


def add_lora(unet: UNet2DConditionModel, *, rank: int, alpha: int, targets: list[str]) -> None:
    """Freeze the UNet and attach trainable LoRA weights to its attention projections."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
    try:
        unet.add_adapter(config)
    except ValueError as exc:  # peft: no module matched the target names
        raise UserError(f"lora_targets {targets} match no UNet layer ({exc}); use e.g. [to_q, to_k, to_v, to_out.0]") from exc


def save_full_pipeline(unet: UNet2DConditionModel, *, base_dir: Path, out_dir: Path) -> Path:
    """Save the fine-tuned UNet with the base model's other parts as one loadable pipeline folder."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    tokenizer, text_encoder = load_text_stack(base_dir)
    scheduler_cls = _scheduler_class(load_scheduler_config(base_dir).get("_class_name", "")) or DDPMScheduler
    pipe = StableDiffusionPipeline(
        vae=load_vae(base_dir), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler_cls.from_pretrained(base_dir, subfolder="scheduler", local_files_only=True),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    target = out_dir / PIPELINE_DIR
    with atomic_path(target, suffix="") as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return target


def save_lora(unet: UNet2DConditionModel, *, out_dir: Path) -> Path:
    """Save only the LoRA weights, in the layout `pipe.load_lora_weights(GEN/lora)` reads."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    target = out_dir / LORA_DIR
    with atomic_path(target, suffix="") as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=LORA_WEIGHTS
        )
    return target


def generator_parts(gen_dir: str | os.PathLike, info: dict) -> tuple[Path, Path]:
    """(folder of the pipeline parts to load, folder of this generator's own weights) for a trained generator."""
    gen_dir = Path(gen_dir)
    if info.get("mode") == "lora":
        weights = gen_dir / LORA_DIR
        model_dir = resolve_model_dir(info["base_model"])
    else:
        weights = model_dir = gen_dir / PIPELINE_DIR
    if not weights.is_dir():
        raise UserError(f"{weights} is missing; the generator in {gen_dir} is incomplete, train it again")
    return model_dir, weights


def load_generator_unet(gen_dir: str | os.PathLike, info: dict, *, dtype: torch.dtype) -> UNet2DConditionModel:
    """The fine-tuned UNet of a trained generator (LoRA weights fused into the base for speed)."""
    model_dir, weights = generator_parts(gen_dir, info)
    unet = load_unet(model_dir, dtype=dtype)
    if info.get("mode") == "lora":
        unet.load_lora_adapter(weights, weight_name=LORA_WEIGHTS, prefix="unet", local_files_only=True)
        unet.fuse_lora()  # one matmul per projection at sampling time instead of three
    return unet.requires_grad_(False).eval()


def generator_checksum(gen_dir: str | os.PathLike, info: dict) -> str:
    """SHA-256 over the generator's saved weights (the whole pipeline folder, or the LoRA folder)."""
    return sha256_dir(generator_parts(gen_dir, info)[1])


def _scheduler_class(name: str) -> type[SchedulerMixin] | None:
    import diffusers

    cls = getattr(diffusers, name, None)
    return cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else None
