"""Stable Diffusion architectures with random weights, built from the public configs in `configs/` (no download).

Timing and memory do not depend on weight values, so a randomly initialised SD 1.5 measures the same as the
real one. `sd15_folder()` saves it once as a diffusers folder (fp32 weights plus an `fp16` variant, like the
hub repo) so that benchmarks load it through the same code path as a user's model.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

CONFIGS = Path(__file__).parent / "configs"
# Parameter counts of the public SD 1.5 checkpoint; a config typo shows up as a mismatch here.
SD15_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def _config(kind: str, name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / kind / f"{name}.json").read_text())


def _clip(config: dict[str, Any], with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig(**config)).eval()


def _tokenizer():
    import tempfile

    from transformers import CLIPTokenizer

    from sdart.testing import write_byte_level_tokenizer

    with tempfile.TemporaryDirectory(prefix="sdart-bench-tok-") as tmp:
        return CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(tmp))


def _init_device(device: str | torch.device):
    return torch.device(device)


def build_pipeline(kind: str = "sd15", *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   seed: int = 0):
    """A full-size pipeline with random weights: kind "sd15" (StableDiffusionPipeline) or "sdxl"."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    with _init_device(device):
        # Initialising on the target device (a GPU) takes a second instead of half a minute of CPU init.
        unet = UNet2DConditionModel.from_config(_config(kind, "unet")).eval()
        vae = AutoencoderKL.from_config(_config(kind, "vae")).eval()
        text_encoder = _clip(_config(kind, "text_encoder"))
        text_encoder_2 = _clip(_config(kind, "text_encoder_2"), with_projection=True) if kind == "sdxl" else None
    parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    if text_encoder_2 is not None:
        parts["text_encoder_2"] = text_encoder_2
    for model in parts.values():
        model.to(dtype)
    if kind == "sd15":
        scheduler = PNDMScheduler.from_config(_config(kind, "scheduler"))
        return StableDiffusionPipeline(**parts, tokenizer=_tokenizer(), scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    if kind == "sdxl":
        scheduler = EulerDiscreteScheduler.from_config(_config(kind, "scheduler"))
        return StableDiffusionXLPipeline(**parts, tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), scheduler=scheduler)
    raise ValueError(f"kind = {kind!r}: use sd15 or sdxl")


def param_counts(pipe) -> dict[str, int]:
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in SD15_PARAMS}


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("SDART_BENCH_CACHE", base / "sdart" / "bench"))


def sd15_folder(directory: str | Path | None = None, *, device: str = "cpu") -> Path:
    """The random-weight SD 1.5 saved as a diffusers folder (built on first use, ~6.5 GB: fp32 + fp16 variant)."""
    folder = Path(directory) if directory else cache_dir() / "sd15-random"
    if (folder / "model_index.json").is_file() and (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return folder
    started = time.perf_counter()
    pipe = build_pipeline("sd15", device=device)
    counts = param_counts(pipe)
    if counts != SD15_PARAMS:
        raise RuntimeError(f"SD 1.5 configs don't give the public parameter counts: {counts} != {SD15_PARAMS}")
    tmp = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(tmp, safe_serialization=True)
    for name in SD15_PARAMS:
        getattr(pipe, name).to(torch.float16)
    pipe.save_pretrained(tmp, safe_serialization=True, variant="fp16")
    tmp.rename(folder)
    print(f"built random-weight SD 1.5 in {folder} ({time.perf_counter() - started:.0f} s)", flush=True)
    return folder


def load_unet(folder: str | Path, dtype: torch.dtype):
    """The UNet of a diffusers folder in `dtype`, from its fp16 variant when it has one (sd15_folder's do; a tiny
    test model saved by sdart.testing has only the fp32 file)."""
    from diffusers import UNet2DConditionModel

    unet = Path(folder) / "unet"
    variant = "fp16" if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file() else None
    return UNet2DConditionModel.from_pretrained(unet, variant=variant, dtype=dtype).eval()


TAESD_PARAMS = 2_445_063  # madebyollin/taesd (encoder + decoder), diffusers AutoencoderTiny's default config


def taesd_folder(directory: str | Path | None = None) -> Path:
    """TAESD (AutoencoderTiny, diffusers' default config is TAESD's) with random weights, as a `--vae` folder."""
    from diffusers import AutoencoderTiny

    folder = Path(directory) if directory else cache_dir() / "taesd-random"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        vae = AutoencoderTiny()
        count = sum(p.numel() for p in vae.parameters())
        if count != TAESD_PARAMS:
            raise RuntimeError(f"AutoencoderTiny's default config is not TAESD's: {count} != {TAESD_PARAMS} parameters")
        vae.save_pretrained(folder)
    return folder
