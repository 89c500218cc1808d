"""Speed settings that keep the picture (up to rounding) or, opted into, trade a little of it; applied to a loaded pipeline."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedOptions:
    """Speed settings that keep the image (up to rounding)."""

    channels_last: bool = True
    fuse_qkv: bool = True
    threads: int | None = None
    # These three change the image (measured in benchmarks/RESULTS.md): off by default.
    step_cache: int = 0  # DeepCache-style reuse of deep UNet features; N = run the full UNet every N steps
    token_downsampling: int = 1  # top-level self-attention keys/values pooled N×N (sdart.tokendownsampling); 1 = off
    quantize: str = "none"  # "int8": int8 weights (UNet, VAE and text encoders) to lower memory


def fuse_qkv(pipe) -> None:
    """One (d → 3d) matmul instead of three per self-attention layer, (d → 2d) for cross-attention's K and V.

    diffusers keeps the separate projections next to the fused ones (for unfusing); the fused processor never
    reads them, so their weights (100 MB in SD 1.5 bf16) are dropped.
    """
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import Attention
    from diffusers.models.modeling_utils import no_init_weights

    fuse_vae = isinstance(pipe.vae, AutoencoderKL)  # AutoencoderTiny (TAESD) has no attention to fuse
    with no_init_weights():  # the fused layers are filled from the separate ones: random init first cost 0.35 s
        pipe.fuse_qkv_projections(vae=fuse_vae)
    for model in (pipe.unet, pipe.vae) if fuse_vae else (pipe.unet,):
        for attn in model.modules():
            if not (isinstance(attn, Attention) and getattr(attn, "fused_projections", False)):
                continue
            unused = ("to_k", "to_v") if attn.is_cross_attention else ("to_q", "to_k", "to_v")
            for name in unused:
                delattr(attn, name)


def _quantize(model) -> int:
    from sdart.speed.quant import quantize_int8

    return quantize_int8(model) if model is not None else 0


def apply_speed(pipe, options: SpeedOptions, device: torch.device) -> None:
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.channels_last:
        # Convolutions in NHWC run faster in oneDNN (CPU) and cuDNN (tensor cores).
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options.quantize not in ("none", "int8"):
        raise ValueError(f"quantize = {options.quantize!r}: use none or int8")
    int8 = options.quantize == "int8"
    saved = 0
    if int8:  # text encoders first: fusing then copies the UNet's projections with that memory already free
        saved += sum(_quantize(getattr(pipe, name, None)) for name in ("text_encoder", "text_encoder_2"))
    if options.fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        fuse_qkv(pipe)
    if int8:  # the fused projections (the rest too, unless the UNet and VAE were streamed in as int8)
        saved += _quantize(pipe.unet) + _quantize(pipe.vae)
        log.info("int8 weights: %.2f GiB of weights freed", saved / 2**30)
    if options.token_downsampling > 1:  # after fusing and quantizing, which replace the attention processors
        from sdart.speed.tokendownsampling import enable_token_downsampling

        enable_token_downsampling(pipe.unet, options.token_downsampling)
    if options.step_cache:
        from sdart.speed.stepcache import enable_step_cache

        enable_step_cache(pipe.unet, options.step_cache)
