"""Command-line options shared by `generate`, `batch` and `serve`, declared once.

Typer renders help with rich markup, so a literal "[default: …]" must be written "\\[default: …]" or it
vanishes from `--help`. Every option defaults to None so that an option left out falls through to the
environment, `.env` or the request model's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

# Request fields (their defaults live in sdart.request.GenerationRequest).
NegativePrompt = Annotated[Optional[str], typer.Option("--negative", "-N", help="What to keep out of the image.")]
Steps = Annotated[Optional[int], typer.Option("--steps", "-s", help="Denoising steps \\[default: 25].")]
CfgScale = Annotated[Optional[float], typer.Option("--cfg", "--cfg-scale", help="Guidance scale \\[default: 7].")]
Width = Annotated[Optional[int], typer.Option("--width", "-W", help="Width in pixels, a multiple of 8 \\[default: the model's size].")]
Height = Annotated[Optional[int], typer.Option("--height", "-H", help="Height in pixels, a multiple of 8 \\[default: the model's size].")]
Sampler = Annotated[Optional[str], typer.Option("--sampler", help="A1111 sampler name, optionally ending in a schedule type ('Euler a Karras') \\[default: DPM++ 2M]; see `sdart samplers`.")]
Scheduler = Annotated[Optional[str], typer.Option("--scheduler", help="A1111 schedule type: Automatic (the sampler's own: Karras for DPM++ 2M), Karras, Exponential, SGM Uniform, Align Your Steps, …")]
ClipSkip = Annotated[Optional[int], typer.Option("--clip-skip", help="Stop the text encoder this many layers early (1 = last layer).")]

# How and where the model runs (sdart.settings.Settings).
Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id, diffusers folder, checkpoint file or builtin:NAME \\[env: SDART_MODEL].")]
ModelConfigDir = Annotated[Optional[Path], typer.Option("--model-config", help="Local diffusers folder with configs for a single-file checkpoint (needed offline).")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps \\[default: auto].")]
DType = Annotated[Optional[str], typer.Option("--dtype", help="auto, float32, float16 or bfloat16 \\[default: auto].")]
Memory = Annotated[Optional[str], typer.Option("--memory", help="balanced, low or minimal \\[default: balanced].")]
Vae = Annotated[Optional[str], typer.Option("--vae", help="Replacement VAE, hub id or folder: e.g. stabilityai/sd-vae-ft-mse, or madebyollin/taesd (tiny, decodes several times faster) \\[env: SDART_VAE].")]
EmbeddingsDir = Annotated[Optional[Path], typer.Option("--embeddings-dir", help="Folder of textual-inversion embeddings (.pt, .bin, .safetensors): a prompt word equal to a file's name uses its vectors \\[env: SDART_EMBEDDINGS_DIR].")]
Emphasis = Annotated[Optional[str], typer.Option("--emphasis", help="How (word:1.2) weights apply: Original, No norm, Ignore or None (A1111's option) \\[default: Original].")]
Lora = Annotated[Optional[list[str]], typer.Option("--lora", help="LoRA fused into the model: a .safetensors file, folder or hub id, optionally REF:SCALE; repeat for more. LCM-LoRA: 4 steps with --sampler LCM --cfg 1.5 \\[env: SDART_LORAS].")]
LoraDir = Annotated[Optional[Path], typer.Option("--lora-dir", help="Folder of LoRA .safetensors files (A1111's models/Lora, subfolders too) that <lora:NAME:WEIGHT> prompt tags name \\[env: SDART_LORA_DIR].")]
# Engine speed options (sdart.device.SpeedOptions); the last three change the picture a little.
Compile = Annotated[Optional[str], typer.Option("--compile", metavar="MODE", help="never, auto or always: the compiled UNet and VAE decoder. auto uses what `sdart compile` built (the server and batch build it in the background), always builds what is missing first (minutes, once), never runs eager; `--compile` alone means always \\[default: auto] \\[env: SDART_COMPILE].")]
StepCache = Annotated[Optional[int], typer.Option("--step-cache", help="Reuse deep UNet features: full UNet every N steps (2-5), faster, slightly different image \\[env: SDART_STEP_CACHE].")]
TokenDownsampling = Annotated[Optional[int], typer.Option("--token-downsampling", help="Top-level self-attention attends to N×N-pooled keys/values (2: 4× fewer; 1 = off); faster, slightly different image \\[env: SDART_TOKEN_DOWNSAMPLING].")]
Quantize = Annotated[Optional[str], typer.Option("--quantize", help="none or int8 (int8 weights: less memory, slightly different image) \\[env: SDART_QUANTIZE].")]
UpscalerDir = Annotated[Optional[Path], typer.Option("--upscaler-dir", help="Folder of upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, …; A1111's models/ESRGAN layout, subfolders allowed), found by file name \\[env: SDART_UPSCALER_DIR].")]
Rng = Annotated[Optional[str], typer.Option("--rng", help="Where noise is drawn: cpu (same image on any device) or device.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]

# Hires fix, variation seeds and the SDXL refiner (request fields with A1111's names; `sdart generate`).
Hires = Annotated[Optional[bool], typer.Option("--hires/--no-hires", help="Hires fix (A1111's enable_hr): draw at -W × -H, upscale, redraw at the larger size. Any --hires-* option turns it on.")]
HiresScale = Annotated[Optional[float], typer.Option("--hires-scale", help="Hires fix: upscale by this factor \\[default: 2].")]
HiresSize = Annotated[Optional[str], typer.Option("--hires-size", metavar="WxH", help="Hires fix: upscale to this size instead (a side of 0 keeps the aspect ratio; both sides: cover the box, crop the rest).")]
HiresUpscaler = Annotated[Optional[str], typer.Option("--hires-upscaler", help="Hires fix: Latent (default), Latent (antialiased), Latent (bicubic), Latent (bicubic antialiased), Latent (nearest), Latent (nearest-exact), None, Lanczos, Nearest.")]
HiresSteps = Annotated[Optional[int], typer.Option("--hires-steps", help="Hires fix: second-pass steps \\[default: 0 = --steps].")]
HiresStrength = Annotated[Optional[float], typer.Option("--hires-strength", help="Hires fix: how much the second pass redraws, 0 < s ≤ 1 \\[default: 0.7].")]
HiresSampler = Annotated[Optional[str], typer.Option("--hires-sampler", help="Hires fix: the second pass's sampler \\[default: --sampler].")]
HiresScheduler = Annotated[Optional[str], typer.Option("--hires-scheduler", help="Hires fix: the second pass's schedule type \\[default: the first pass's].")]
HiresPrompt = Annotated[Optional[str], typer.Option("--hires-prompt", help="Hires fix: the second pass's prompt \\[default: the prompt].")]
HiresNegative = Annotated[Optional[str], typer.Option("--hires-negative", help="Hires fix: the second pass's negative prompt \\[default: --negative].")]
HiresCfg = Annotated[Optional[float], typer.Option("--hires-cfg", help="Hires fix: the second pass's guidance scale \\[default: --cfg].")]
Subseed = Annotated[Optional[int], typer.Option("--subseed", "--variation-seed", help="Variation seed: its noise is blended into the seed's by --subseed-strength (-1: random).")]
SubseedStrength = Annotated[Optional[float], typer.Option("--subseed-strength", "--variation-strength", help="Variation seed strength, 0 (the seed's picture) to 1 (the variation seed's) \\[default: 0].")]
SeedResizeFrom = Annotated[Optional[str], typer.Option("--seed-resize-from", metavar="WxH", help="Draw the seed's noise at this size and keep its centre (a composition kept at another size).")]
Refiner = Annotated[Optional[str], typer.Option("--refiner", help="SDXL refiner model that takes over the last steps (hub id, folder or checkpoint).")]
RefinerSwitchAt = Annotated[Optional[float], typer.Option("--refiner-switch-at", help="Where the refiner takes over, as a fraction of the denoising \\[default: 0.8].")]

class CompileFlagCommand(TyperCommand):
    """Lets `--compile` stand alone (meaning always) last or before another option, and keeps the old
    `--no-compile` (never): the parser itself only knows options that always take a value. Anything else after
    `--compile` is its value, and a wrong one is named (`--compile sometimes`)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--no-compile":
                fixed += ["--compile", "never"]
                continue
            fixed.append(arg)
            if arg == "--compile" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                fixed.append("always")
        return super().parse_args(ctx, fixed)
