"""Device and precision choice, memory modes and speed settings for a loaded pipeline."""

from __future__ import annotations

import functools
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
    3.83 s in bf16, 3.54 s with channels_last + fused QKV, against 6.72 s in fp32; benchmarks/RESULTS.md).
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
    # These three change the image (measured in benchmarks/RESULTS.md): off by default.
    step_cache: int = 0  # DeepCache-style reuse of deep UNet features; N = run the full UNet every N steps
    token_downsampling: int = 1  # top-level self-attention keys/values pooled N×N (sdart.tokendownsampling); 1 = off
    quantize: str = "none"  # "int8": int8 weights (UNet, VAE and text encoders) to lower memory


def release_freed_memory(*, collect: bool = True) -> None:
    """Hand memory that Python and glibc have freed back to the OS. glibc keeps freed blocks in its heap (a
    converted weight, a denoising step's activations), so without this they stay in the process's RSS and the
    next phase's peak stacks on top of them. `collect=False` skips the garbage collector (for hot loops that
    free by reference count)."""
    import gc

    if collect:
        gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


LOW_MEMORY_MMAP_THRESHOLD = 4 * 2**20


def return_large_blocks_on_free(threshold: int = LOW_MEMORY_MMAP_THRESHOLD) -> None:
    """Make glibc map every block of `threshold` bytes or more on its own, so that freeing it returns it to the OS.

    By default glibc raises that threshold (up to 32 MB) each time a large block is freed, so a UNet call's
    activations come from its heap, fragment it and stay resident: the run's peak grows by 0.2 GiB over a few
    steps. With the threshold fixed at 4 MB from the process's start (MALLOC_MMAP_THRESHOLD_), an int8 SD 1.5 run
    at 512² peaked at 1.82 GiB instead of 1.97, and its UNet steps took 15 % longer (page faults on fresh
    mappings); at 1 MB, 1.77 GiB and 25 % longer. Process-wide, so only for --memory low/minimal.
    """
    M_MMAP_THRESHOLD = -3  # malloc.h
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, threshold)


@functools.cache  # looked up once: the engine trims after every step in --memory low
def _glibc():
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None  # not glibc: the allocator is not ours to tune


def fuse_qkv(pipe) -> None:
    """One (d → 3d) matmul instead of three per self-attention layer, (d → 2d) for cross-attention's K and V.

    diffusers keeps the separate projections next to the fused ones (for unfusing); the fused processor never
    reads them, so their weights (100 MB in SD 1.5 bf16) are dropped.
    """
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import Attention

    fuse_vae = isinstance(pipe.vae, AutoencoderKL)  # AutoencoderTiny (TAESD) has no attention to fuse
    pipe.fuse_qkv_projections(vae=fuse_vae)
    for model in (pipe.unet, pipe.vae) if fuse_vae else (pipe.unet,):
        for attn in model.modules():
            if not (isinstance(attn, Attention) and getattr(attn, "fused_projections", False)):
                continue
            unused = ("to_k", "to_v") if attn.is_cross_attention else ("to_q", "to_k", "to_v")
            for name in unused:
                delattr(attn, name)


def _quantize(model) -> int:
    from sdart.quant import quantize_int8

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
        from sdart.tokendownsampling import enable_token_downsampling

        enable_token_downsampling(pipe.unet, options.token_downsampling)
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
    if device.type == "cpu":
        # Weights become constants of the graph: folded, and prepacked once for oneDNN instead of per call.
        inductor_config.freezing = True
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
    _small_vae_tiles(pipe.vae)
    if device.type != "cuda":
        # No offload target: only the VAE's activations shrink (tiles). Attention slicing would make it worse:
        # SDPA's kernel never holds the full attention matrix, the slicing processor holds a slice of it.
        pipe.to(device)
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


LOW_MEMORY_TILE = 256  # px: a 512² decode in 4 overlapping tiles holds a quarter of the activations


def _small_vae_tiles(vae) -> None:
    """diffusers tiles only images larger than the VAE's training size (512 for SD 1.x), so by default a 512²
    decode is one piece and its activations are the run's memory peak. Smaller tiles (blended over 25 %
    overlaps) bound it at any size."""
    if vae.tile_sample_min_size > LOW_MEMORY_TILE:
        vae.tile_sample_min_size = LOW_MEMORY_TILE
        vae.tile_latent_min_size = LOW_MEMORY_TILE // 2 ** (len(vae.config.block_out_channels) - 1)


def _group_offload(model, device: torch.device) -> None:
    from diffusers.hooks import apply_group_offloading

    apply_group_offloading(
        model,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="leaf_level",
        use_stream=True,
    )
