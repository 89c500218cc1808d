"""Memory modes for a loaded pipeline, and handing freed memory back to the OS."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


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
