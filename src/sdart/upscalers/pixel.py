"""Upscaling a picture by A1111 upscaler name: "None", "Lanczos", "Nearest", or a model in the upscalers folder.

`upscale()` is the one entry point: hires fix, `sdart upscale` and the A1111 extras endpoints all call it.
A model is run the way A1111's `Upscaler.upscale` runs one (modules/upscaler.py): again (up to 3 passes) while
the picture is still smaller than the target, then resized to the exact target with Lanczos; so a 4× model
asked for 2× runs once and is scaled down, and asked for 8× runs twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sdart.upscalers.files import UpscalerError, UpscalerFile, find_upscaler_file, load_upscaler
from sdart.upscalers.names import NONE, PIXEL_UPSCALERS, canonical_name, is_latent_mode
from sdart.upscalers.tiles import DEFAULT_OVERLAP, DEFAULT_TILE, check_tiling, run_tiled_within_memory

if TYPE_CHECKING:
    import torch

MAX_SIDE = 8192  # pixels, each side of an upscaled picture (A1111's extras tab goes to 8192 too)
MAX_MODEL_PASSES = 3
MAX_ALIGNMENT = 64  # pixels; tiles of 512 px lose little to it
_RESAMPLE = {NONE: Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS,
             "Nearest": Image.Resampling.NEAREST}
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # model channels → PIL mode


def target_size(size: tuple[int, int], scale: float | None = None,
                to: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) of the result: `to` as given, else each side × `scale` (A1111: int(side × scale)).
    ValueError names `scale` or the size when the result is empty or over MAX_SIDE."""
    if to is None:
        if scale is None:
            raise ValueError("scale: give a scale or a target size")
        if not scale > 0:
            raise ValueError(f"scale = {scale}: must be above 0")
        to = (int(size[0] * scale), int(size[1] * scale))
        what = f"scale = {scale:g}"
    else:
        what = f"size = {to[0]}x{to[1]}"
    if min(to) < 1 or max(to) > MAX_SIDE:
        raise ValueError(f"{what}: gives a {to[0]}×{to[1]} picture from {size[0]}×{size[1]}; each side must be "
                         f"1 to {MAX_SIDE} pixels")
    return to


def upscale(image: Image.Image, name: str, scale: float | None = None, *, size: tuple[int, int] | None = None,
            folder: str | Path | None = None, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
            device: str | torch.device | None = None, dtype: str = "auto") -> Image.Image:
    """`image` upscaled by `name` to `size` (width, height), or by `scale`.

    name: "None" and "Lanczos" (a Lanczos resize), "Nearest", or a model's name in `folder` (see sdart.upscalers.files).
    tile, overlap: tile size and overlap in input pixels for models (tile 0: the whole picture at once).
    device: where a model runs ("auto" or None: cuda > mps > cpu); dtype: "auto" (the device's fast precision where
    the architecture allows), "float32", "bfloat16" or "float16".
    UpscalerError (a ValueError) names the upscaler or file that is wrong; ValueError names scale, size, tile, overlap.
    """
    # 1. Check inputs.
    name = canonical_name(name)
    file = check_upscaler(name, folder)
    target = target_size(image.size, scale, size)
    check_tiling(tile, overlap)
    # 2. The ones that need no model.
    if file is None:
        return image if image.size == target else image.resize(target, _RESAMPLE[name])
    # 3. A model: loaded (kept for the next call), run in passes, resized to the exact target.
    from sdart.speed.device import pick_device

    model = load_upscaler(file.path, pick_device(str(device or "auto")), dtype)
    return upscale_with_model(image, model, target, tile=tile, overlap=overlap)


def check_upscaler(name: str, folder: str | Path | None) -> UpscalerFile | None:
    """The model file `name` stands for, None for a pixel upscaler; UpscalerError for anything else (cheap: the
    file is not read)."""
    name = canonical_name(name)
    if name in _RESAMPLE:
        return None
    if is_latent_mode(name):
        raise UpscalerError(f"upscaler {name!r}: a latent mode works on latents in hires fix, not on a picture; "
                            f"use {', '.join(PIXEL_UPSCALERS)} or a model")
    return find_upscaler_file(folder, name, PIXEL_UPSCALERS)


def upscale_with_model(image: Image.Image, model: Any, target: tuple[int, int], *, tile: int = DEFAULT_TILE,
                       overlap: int = DEFAULT_OVERLAP) -> Image.Image:
    """`image` through a loaded spandrel ImageModelDescriptor until it reaches `target`, then Lanczos to it."""
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") and model.input_channels != 4 else None
    picture = image.convert(_mode(model.input_channels, model))
    for _ in range(MAX_MODEL_PASSES):
        before = picture.size
        picture = run_model(picture, model, tile=tile, overlap=overlap)
        if picture.size == before or (picture.width >= target[0] and picture.height >= target[1]):
            break
    if picture.size != target:
        picture = picture.resize(target, Image.Resampling.LANCZOS)
    if alpha is not None:  # the model upscaled the colours; the transparency follows with Lanczos
        picture = picture.convert("RGBA")
        picture.putalpha(alpha.resize(target, Image.Resampling.LANCZOS))
    return picture


def run_model(picture: Image.Image, model: Any, *, tile: int = DEFAULT_TILE,
              overlap: int = DEFAULT_OVERLAP) -> Image.Image:
    """One pass of the model over `picture` (already in the model's channel mode): `model.scale` × larger."""
    import torch

    from sdart.upscalers.arches import spandrel

    pixels = np.asarray(picture)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]  # (1, C, H, W) uint8
    tensor = tensor.to(model.device).float().div_(255.0).to(model.dtype)  # scaled in float32, then narrowed
    if _is_channels_last(model):  # the input in the weights' layout, so no convolution converts it
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    if model.tiling == spandrel().ModelTiling.INTERNAL:  # the model tiles (or needs the whole picture) itself
        tile = 0
    with torch.inference_mode():
        out = run_tiled_within_memory(model, tensor, model.scale, tile, overlap, model.output_channels,
                                      tile_alignment(model))
    out = (out[0].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H·s, W·s, C)
    return Image.fromarray(out[:, :, 0] if out.shape[2] == 1 else out)


def tile_alignment(model: Any) -> int:
    """Pixels that tile starts are multiples of: the model's size multiple and its attention windows (spandrel's
    `window_size`, DAT's and RGT's `split_size`), so that each tile is cut into the windows the whole picture is
    (window attention is not shift-invariant: a tile off the windows' grid gives a slightly different picture)."""
    hyper = getattr(model.model, "hyperparameters", {}) or {}
    sizes = [model.size_requirements.multiple_of]
    for key in ("window_size", "split_size"):
        value = hyper.get(key)
        sizes += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, int) and v > 0]
    align = math.lcm(*sizes) * int(hyper.get("start_unshuffle", 1) or 1)
    return align if align <= MAX_ALIGNMENT else max(sizes)


def _is_channels_last(model: Any) -> bool:
    import torch

    weight = next((p for p in model.model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _mode(channels: int, model: Any) -> str:
    if channels not in _MODES:
        raise UpscalerError(f"a {model.architecture.name} model taking {channels}-channel pictures: sdart runs 1-, "
                            "3- and 4-channel upscalers")
    return _MODES[channels]
