"""SD generator throughput: ours against plain diffusers, measured in the same run (not a test).

    python bench/generator_throughput.py            # GPU: SD-Turbo (SD 2.1) architecture, random init, 512 px
    python bench/generator_throughput.py --tiny     # CPU smoke run with the tests' tiny model (no meaning as speed)

Generation: images/s at one step, text2img, guidance off (the turbo preset: 1 here, diffusers' guidance_scale=0), from noise to grey uint8 images on the
host. Ours = mrisynth.generate.sd_sample (fp16, channels_last, torch.compile, batched decode, per-image seeds);
plain = StableDiffusionPipeline in fp16 given the same prompt embeddings and generators.
Fine-tuning: images/s of full-UNet steps. Ours = mrisynth.generate.sd_train's step on cached latents (bf16 autocast);
plain = the same step with the VAE encoding the pixel batch every step.
No weights are needed: the models are built from configs in code. Prints one JSON object (and writes --json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # also when run through runpy (the tests), not only as a script
from _common import peak_gpu_mib, peak_host_mib, sync  # noqa: E402


def sd_turbo_components(device: torch.device) -> dict:
    """SD 2.1 / SD-Turbo shapes (865 M UNet, 84 M VAE), random init; the text encoder is not needed here."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel

    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2, sample_size=768, scaling_factor=0.18215,
        )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
        prediction_type="epsilon", steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "embed": (77, 1024)}


def tiny_components(device: torch.device) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from sd_tiny import build_tiny_components

    parts = build_tiny_components()
    parts = {k: parts[k] for k in ("unet", "vae", "scheduler")}
    parts["unet"].to(device)
    parts["vae"].to(device)
    return {**parts, "embed": (77, 32)}


def timed(fn, *, iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call after `warmup` calls (compilation happens there)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def peak_gpu_gib(device: torch.device) -> float | None:
    """Peak GPU memory since the last reading, GiB to 2 decimals (None on the CPU)."""
    mib = peak_gpu_mib(device)
    return None if mib is None else round(mib / 1024, 2)


def bench_generation(parts: dict, args, device: torch.device) -> dict:
    from diffusers import StableDiffusionPipeline

    from mrisynth.generate.sd import SampleConfig
    from mrisynth.generate.sd_latents import decode_latents
    from mrisynth.generate.sd_sample import denoise, initial_noise, resolve_dtype, speed_up

    cfg = SampleConfig(steps=1, guidance=1.0, batch_size=args.batch, compile=not args.no_compile,
                       compile_mode=args.compile_mode)
    dtype = resolve_dtype("auto", device)
    unet, vae = parts["unet"].to(dtype).eval(), parts["vae"].to(dtype).eval()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (4, args.size // factor, args.size // factor)
    embeds = torch.randn(args.batch, *parts["embed"], device=device, dtype=dtype)
    seeds = list(range(args.batch))
    results = {}

    # Plain diffusers first, on the uncompiled modules.
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=parts["scheduler"], safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def plain():
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return pipe(prompt_embeds=embeds, num_inference_steps=1, guidance_scale=0.0, height=args.size,
                    width=args.size, generator=gens, output_type="np").images

    with torch.no_grad():
        results["plain_s_per_batch"] = timed(plain, iters=args.iters, warmup=1, device=device)
    results["plain_peak_gpu_gib"] = peak_gpu_gib(device)

    fast_unet, fast_vae = speed_up(unet, vae, cfg, device)
    scheduler = parts["scheduler"]

    def ours():
        noise, gens = initial_noise(seeds, shape)
        latents = denoise(fast_unet, scheduler, noise, embeds, steps=1, generators=gens)
        return decode_latents(fast_vae, latents, batch_size=cfg.decode_batch)

    with torch.no_grad():
        results["ours_s_per_batch"] = timed(ours, iters=args.iters, warmup=args.warmup, device=device)
    results["ours_peak_gpu_gib"] = peak_gpu_gib(device)
    results["plain_img_per_s"] = round(args.batch / results["plain_s_per_batch"], 2)
    results["ours_img_per_s"] = round(args.batch / results["ours_s_per_batch"], 2)
    results["speedup"] = round(results["ours_img_per_s"] / results["plain_img_per_s"], 2)
    return results


def bench_finetune(parts: dict, args, device: torch.device) -> dict:
    from diffusers import DDPMScheduler

    from mrisynth.generate.sd import TrainConfig
    from mrisynth.generate.sd_latents import encode_images
    from mrisynth.generate.sd_train import _loss

    unet = parts["unet"].float().train().requires_grad_(True)
    vae = parts["vae"].float().eval().requires_grad_(False)
    noise_sched = DDPMScheduler.from_config(parts["scheduler"].config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    bf16 = device.type == "cuda"
    cfg = TrainConfig(batch_size=args.train_batch, flip=False, size=args.train_size)
    n = 4 * args.train_batch
    pixels = torch.randint(0, 256, (n, args.train_size, args.train_size), dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        latents = encode_images(vae, pixels.numpy(), device=device, progress=False).to(device)  # the cache
    data = {"latents": latents, "prompt_embeds": torch.randn(4, *parts["embed"], device=device)}
    step = {"i": 0}

    def update(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def ours():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(unet, noise_sched, data, labels, cfg, step=step["i"], device=device)
        update(loss)
        step["i"] += 1

    def plain():
        # The textbook loop: the VAE encodes the pixel batch on every step.
        rows = torch.randint(0, n, (args.train_batch,))
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            x = pixels[rows].to(device).float().div(127.5).sub(1).unsqueeze(1).expand(-1, 3, -1, -1)
            lat = vae.encode(x).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (len(lat),), device=device)
        cond = data["prompt_embeds"][labels[rows.to(device)]]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = unet(noise_sched.add_noise(lat, noise, t), t, encoder_hidden_states=cond).sample
        update(torch.nn.functional.mse_loss(pred.float(), noise.float()))

    results = {"plain_s_per_step": timed(plain, iters=args.iters, warmup=1, device=device)}
    results["plain_peak_gpu_gib"] = peak_gpu_gib(device)
    results["ours_s_per_step"] = timed(ours, iters=args.iters, warmup=1, device=device)
    results["ours_peak_gpu_gib"] = peak_gpu_gib(device)
    results["plain_img_per_s"] = round(args.train_batch / results["plain_s_per_step"], 2)
    results["ours_img_per_s"] = round(args.train_batch / results["ours_s_per_step"], 2)
    results["speedup"] = round(results["ours_img_per_s"] / results["plain_img_per_s"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model at 32 px: a CPU smoke run")
    parser.add_argument("--batch", type=int, default=None, help="generation batch (default 32; tiny 4)")
    parser.add_argument("--size", type=int, default=None, help="generation size in px (default 512; tiny 32)")
    parser.add_argument("--train-batch", type=int, default=None, help="fine-tune batch (default 8; tiny 2)")
    parser.add_argument("--train-size", type=int, default=None, help="fine-tune size in px (default 256; tiny 32)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 10; tiny 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing ours (compilation)")
    parser.add_argument("--no-compile", action="store_true", help="ours without torch.compile")
    parser.add_argument("--compile-mode", default="max-autotune", help="torch.compile mode for ours (GPU)")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    small = args.tiny
    args.batch = args.batch or (4 if small else 32)
    args.size = args.size or (32 if small else 512)
    args.train_batch = args.train_batch or (2 if small else 8)
    args.train_size = args.train_size or (32 if small else 256)
    args.iters = args.iters or (2 if small else 10)
    if small:
        args.warmup = min(args.warmup, 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    build = tiny_components if small else sd_turbo_components
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": "tiny" if small else "sd-turbo architecture (random init)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "json"} | {"json": str(args.json)},
        "generation": bench_generation(build(device), args, device),
    }
    if not args.skip_finetune:
        report["finetune"] = bench_finetune(build(device), args, device)
    report["peak_host_rss_gib"] = round(peak_host_mib() / 1024, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
