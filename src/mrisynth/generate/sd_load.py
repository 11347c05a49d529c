"""Finding an SD-family model offline, loading its parts one by one, and saving a fine-tuned result.

The hub is never contacted: a model id is looked up in the local Hugging Face cache only, and every
`from_pretrained` gets `local_files_only=True`. Parts are loaded separately so that training holds only the UNet
(the VAE and text encoder run once, to fill the latent cache, and are then dropped).

A trained generator folder:

    GEN/generator.json      backend, data_dir, classes, base_model, prompt_template, mode, size, steps (executed),
                            sha256 (of pipeline/ or lora/), base_sha256 (LoRA: of the base model's unet/)
    GEN/pipeline/           mode=full: a complete diffusers pipeline folder (StableDiffusionPipeline.from_pretrained)
    GEN/lora/               mode=lora: pytorch_lora_weights.safetensors (pipe.load_lora_weights on the base model);
                            its safetensors metadata holds the LoRA config, so alpha (the scale) survives reloading

Model folders are checked before use: an SD 1.x/2.x text-to-image UNet with an epsilon or v-prediction schedule;
SDXL, inpainting and `sample`-prediction models are refused with one line instead of failing inside diffusers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
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
    check_model_dir(model_dir)
    return model_dir.resolve()


def check_model_dir(model_dir: Path) -> None:
    """Refuse, in one line, a folder that is not an SD 1.x/2.x-style text-to-image model this backend can train."""
    for part in ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer", "scheduler"):
        if not (model_dir / part).exists():
            raise UserError(f"{model_dir} has no {part}; the model folder is incomplete: download it again "
                            "(`huggingface-cli download stabilityai/sd-turbo --local-dir DIR`)")
    unet = _read_config(model_dir / "unet" / "config.json")
    vae = _read_config(model_dir / "vae" / "config.json")
    text = _read_config(model_dir / "text_encoder" / "config.json")
    scheduler = _read_config(next((model_dir / "scheduler").glob("*.json"), model_dir / "scheduler" / "none.json"))
    why = None
    if unet.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        why = f"its UNet is a {unet.get('_class_name')}, not a UNet2DConditionModel"
    elif unet.get("addition_embed_type") or (model_dir / "text_encoder_2").exists():
        why = "it is an SDXL-family model (a second text encoder / added time embeddings)"
    elif unet.get("in_channels") != vae.get("latent_channels", 4):
        why = (f"its UNet takes {unet.get('in_channels')} input channels, not the VAE's {vae.get('latent_channels', 4)} "
               "(an inpainting or depth model)")
    elif unet.get("cross_attention_dim") not in (None, text.get("hidden_size")):
        why = f"its UNet attends to {unet.get('cross_attention_dim')}-d text, its text encoder gives {text.get('hidden_size')}"
    elif scheduler.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction"):
        why = f"it predicts '{scheduler.get('prediction_type')}', not epsilon or v_prediction"
    if why:
        raise UserError(f"{model_dir} cannot be used: {why}; use an SD 1.x/2.x model such as stabilityai/sd-turbo")


def _read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc.__class__.__name__}); the model folder is damaged: "
                        "download it again") from exc
    return data if isinstance(data, dict) else {}


def _loading(what: str, where: str | os.PathLike, load: Callable):
    """Run `load()`; a missing, truncated or foreign weights file becomes a one-line UserError."""
    try:
        return load()
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # diffusers and safetensors raise all four
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"cannot load the {what} from {where} ({first}); the folder is incomplete or damaged: "
                        "download or train it again") from exc


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

    return _loading("UNet", Path(model_dir) / subfolder, lambda: UNet2DConditionModel.from_pretrained(
        model_dir, subfolder=subfolder, torch_dtype=dtype, local_files_only=True))


def load_vae(model_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """The autoencoder, frozen (it only encodes once and decodes samples)."""
    from diffusers import AutoencoderKL

    vae = _loading("VAE", Path(model_dir) / "vae", lambda: AutoencoderKL.from_pretrained(
        model_dir, subfolder="vae", torch_dtype=dtype, local_files_only=True))
    return vae.requires_grad_(False).eval()


def load_text_stack(model_dir: str | os.PathLike) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """(tokenizer, text encoder), frozen: prompts are encoded once per class."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = _loading("tokenizer", Path(model_dir) / "tokenizer", lambda: CLIPTokenizer.from_pretrained(
        model_dir, subfolder="tokenizer", local_files_only=True))
    encoder = _loading("text encoder", Path(model_dir) / "text_encoder", lambda: CLIPTextModel.from_pretrained(
        model_dir, subfolder="text_encoder", local_files_only=True))
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
    # The adapter's config (rank, alpha, targets) goes into the file's metadata: without it diffusers reloads the
    # adapter at scale 1 instead of alpha / rank.
    metadata = unet.peft_config["default"].to_dict()
    with atomic_path(target, suffix="") as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=LORA_WEIGHTS,
            unet_lora_adapter_metadata=metadata,
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
        _loading("LoRA weights", weights, lambda: unet.load_lora_adapter(
            weights, weight_name=LORA_WEIGHTS, prefix="unet", local_files_only=True))
        unet.fuse_lora()  # one matmul per projection at sampling time instead of three
    return unet.requires_grad_(False).eval()


def base_checksum(model_dir: str | os.PathLike) -> str:
    """SHA-256 of a base model's unet/ folder: what a LoRA adapter is added to."""
    return sha256_dir(Path(model_dir) / "unet")


def generator_checksum(gen_dir: str | os.PathLike, info: dict) -> str:
    """SHA-256 of what sampling loads: the pipeline folder, or (LoRA) the adapter together with the base UNet."""
    return verified_checksum(gen_dir, info, check=False)


def verified_checksum(gen_dir: str | os.PathLike, info: dict, *, check: bool = True) -> str:
    """`generator_checksum`, after checking the weights against the hashes generator.json recorded at training."""
    model_dir, weights = generator_parts(gen_dir, info)
    hashes = {weights: (sha256_dir(weights), info.get("sha256"))}
    if info.get("mode") == "lora":
        hashes[model_dir / "unet"] = (base_checksum(model_dir), info.get("base_sha256"))
    for folder, (actual, expected) in hashes.items():
        if check and expected and actual != expected:
            raise UserError(f"{folder} changed since the generator was trained (sha256 differs from generator.json); "
                            "restore the original files or train the generator again")
    if info.get("mode") != "lora":
        return hashes[weights][0]
    return hashlib.sha256("+".join(actual for actual, _ in hashes.values()).encode()).hexdigest()


def _scheduler_class(name: str) -> type[SchedulerMixin] | None:
    import diffusers

    cls = getattr(diffusers, name, None)
    return cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else None
