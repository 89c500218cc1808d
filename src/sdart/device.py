"""Device and precision choice, memory modes and speed settings for a loaded pipeline."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def pick_device(requested: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"device = {requested!r}: not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device = {requested!r}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device = {requested!r}: MPS is not available on this machine")
    return device


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively (on this project's 2-core EPYC one SD 1.5 UNet call takes
    14.2 s in bf16, 12.2 s with channels_last + fused QKV, against 19.9 s in fp32; benchmarks/RESULTS.md).
    Without them bf16 is emulated and slower."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    name = DTYPE_ALIASES.get(requested, requested)
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype = {requested!r}: use auto, float32, float16 or bfloat16")
        if device.type == "cpu" and name == "float16":
            raise ValueError("dtype = 'float16': half precision is not supported for CPU inference; use bfloat16 or float32")
        return DTYPES[name]
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


@dataclass(frozen=True)
class SpeedOptions:
    """Speed settings that keep the image (up to rounding)."""

    channels_last: bool = True
    fuse_qkv: bool = True
    compile: bool = False
    compile_cache_dir: Path | None = None
    threads: int | None = None
    # These two change the image (measured in benchmarks/RESULTS.md): off by default.
    step_cache: int = 0  # DeepCache-style reuse of deep UNet features; N = run the full UNet every N steps
    quantize: str = "none"  # "int8": int8 weights (UNet and text encoder) to lower memory


def apply_speed(pipe, options: SpeedOptions, device: torch.device) -> None:
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.channels_last:
        # Convolutions in NHWC run faster in oneDNN (CPU) and cuDNN (tensor cores).
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options.fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        # One (d → 3d) matmul instead of three per self-attention layer.
        pipe.fuse_qkv_projections()
    if options.quantize == "int8":
        from sdart.quant import quantize_int8

        # After fusing, so that the fused to_qkv weight is the one quantized.
        saved = sum(quantize_int8(getattr(pipe, name)) for name in ("unet", "text_encoder", "text_encoder_2")
                    if getattr(pipe, name, None) is not None)
        log.info("int8 weights: %.2f GiB of weights freed", saved / 2**30)
    elif options.quantize not in ("none", "", None):
        raise ValueError(f"quantize = {options.quantize!r}: use none or int8")
    if options.step_cache:
        from sdart.stepcache import enable_step_cache

        enable_step_cache(pipe.unet, options.step_cache)
    # options.compile is applied by compile_unet, after the memory mode: it must wrap the final module.


def compile_unet(pipe, options: SpeedOptions, device: torch.device) -> None:
    """torch.compile the UNet: on CUDA with CUDA graphs ("reduce-overhead": one graph launch per step instead of
    ~1,000 kernel launches); Inductor's FX/autograd caches under `compile_cache_dir` make a second process
    start reuse the compiled kernels."""
    if options.compile_cache_dir:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(options.compile_cache_dir))
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._inductor.config as inductor_config

    inductor_config.conv_1x1_as_mm = True  # 1×1 convs (the attention blocks' proj_in/out) as plain matmuls
    mode = "reduce-overhead" if device.type == "cuda" else None
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True)


def apply_memory_mode(pipe, mode: str, device: torch.device) -> None:
    """balanced: everything on the device; low: one model on the GPU at a time, VAE sliced and tiled;
    minimal: weights streamed to the GPU layer by layer, overlapped with compute."""
    if mode == "balanced":
        pipe.to(device)
        return
    if mode not in ("low", "minimal"):
        raise ValueError(f"memory = {mode!r}: use balanced, low or minimal")
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
    if device.type != "cuda":
        # No offload target: keep activations small instead.
        pipe.to(device)
        pipe.enable_attention_slicing("max" if mode == "minimal" else "auto")
        return
    if mode == "low":
        pipe.enable_model_cpu_offload(device=device)
        return
    try:
        # Group offloading with a CUDA stream prefetches the next group's weights while the current one runs.
        for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
            model = getattr(pipe, name, None)
            if model is not None:
                _group_offload(model, device)
    except (AttributeError, TypeError, ValueError) as exc:  # older diffusers or a model without hooks support
        log.warning("group offloading unavailable (%s); using sequential CPU offload", exc)
        pipe.enable_sequential_cpu_offload(device=device)


def _group_offload(model, device: torch.device) -> None:
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(
        model,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="leaf_level",
        use_stream=True,
    )
