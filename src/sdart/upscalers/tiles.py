"""Running an upscaler model over a picture in overlapping tiles whose seams are blended away.

The scheme follows ComfyUI's `tiled_scale` (comfy/utils.py) and its upscale node: 512 px tiles overlapping by
32 px, each upscaled on its own, the overlaps blended by weights that fall off towards a tile's edge, and the
tile halved (down to 128 px) when the device runs out of memory. sdart's own choices: tiles are spread evenly
so each has the full size (no thin leftover tile at the end), and a tile's weight is zero over the outer quarter
of an overlap, where the model saw the least context, and rises linearly across the middle half, so the two
weights of a seam add up to one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a model runs: settings and the CLI check tiles without it
    import torch

log = logging.getLogger(__name__)

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
MIN_TILE_ON_OOM = 128
_WEIGHT_FLOOR = 1e-4  # keeps every covered pixel's weight sum above zero where three tiles meet


def check_tiling(tile: int, overlap: int) -> None:
    """ValueError naming `tile` or `overlap` when they can't tile a picture."""
    if tile != 0 and tile < 16:
        raise ValueError(f"tile = {tile}: use 0 (no tiles) or at least 16 pixels")
    if overlap < 0:
        raise ValueError(f"overlap = {overlap}: must be 0 or more pixels")
    if tile and overlap * 2 >= tile:
        raise ValueError(f"overlap = {overlap}: must be under half the tile ({tile} px)")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` px start along an axis of `length` px: the fewest that overlap by at least
    `overlap`, spread evenly from one end to the other."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int) -> torch.Tensor:
    """Rising weights over an overlap of `length` output px: 0 on the outer quarter, linear over the middle half."""
    import torch

    centre = (torch.arange(length, dtype=torch.float32) + 0.5) / length  # 0..1 across the overlap
    return ((centre - 0.25) / 0.5).clamp(0.0, 1.0)


def _axis_weights(starts: list[int], index: int, tile: int, scale: int) -> torch.Tensor:
    """Weights along one axis of tile `index` (in output px), ramped where it overlaps its neighbours."""
    import torch

    weights = torch.ones(tile * scale)
    if index > 0 and (shared := (starts[index - 1] + tile - starts[index]) * scale) > 0:
        weights[:shared] = torch.minimum(weights[:shared], _ramp(shared))
    if index < len(starts) - 1 and (shared := (starts[index] + tile - starts[index + 1]) * scale) > 0:
        weights[-shared:] = torch.minimum(weights[-shared:], _ramp(shared).flip(0))
    return weights


def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
              overlap: int, out_channels: int) -> torch.Tensor:
    """`model` over `image` (1, C, H, W) in tiles of `tile` px (0: whole), blended; (1, out_channels, H·s, W·s)
    float32 on the CPU."""
    import torch

    _, _, height, width = image.shape
    if tile == 0 or (height <= tile and width <= tile):
        return model(image).float().cpu()
    tile_h, tile_w = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    out = torch.zeros(1, out_channels, height * scale, width * scale)
    total = torch.zeros(1, 1, height * scale, width * scale)
    for iy, y in enumerate(ys):
        weight_y = _axis_weights(ys, iy, tile_h, scale)
        for ix, x in enumerate(xs):
            piece = model(image[:, :, y:y + tile_h, x:x + tile_w]).float().cpu()  # (1, C_out, tile_h·s, tile_w·s)
            weight = torch.outer(weight_y, _axis_weights(xs, ix, tile_w, scale)) + _WEIGHT_FLOOR
            rows, cols = slice(y * scale, (y + tile_h) * scale), slice(x * scale, (x + tile_w) * scale)
            out[:, :, rows, cols] += piece * weight
            total[:, :, rows, cols] += weight
    return out / total


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the allocators' RuntimeErrors on the CPU and MPS."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def run_tiled_within_memory(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int,
                            tile: int, overlap: int, out_channels: int) -> torch.Tensor:
    """`run_tiled`, halving the tile while the device runs out of memory (ComfyUI's rule), to MIN_TILE_ON_OOM."""
    import torch

    while True:
        try:
            return run_tiled(model, image, scale, tile, overlap, out_channels)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            smaller = (tile or DEFAULT_TILE * 2) // 2
            if smaller < MIN_TILE_ON_OOM:
                raise MemoryError(f"out of memory upscaling a {image.shape[3]}×{image.shape[2]} picture even in "
                                  f"{tile} px tiles: {str(exc).splitlines()[0]}") from exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of memory with %s; trying %d px tiles", f"{tile} px tiles" if tile else "no tiles",
                        smaller)
            tile, overlap = smaller, min(overlap, smaller // 2 - 1)
