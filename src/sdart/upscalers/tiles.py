"""Running an upscaler model over a picture in overlapping tiles whose seams are blended away.

The scheme follows ComfyUI's `tiled_scale` (comfy/utils.py) and its upscale node: 512 px tiles overlapping by
32 px, each upscaled on its own, the overlaps blended by weights that fall off towards a tile's edge, and the
tile halved (down to 128 px) when the device runs out of memory. sdart's own choices: along each side, the
fewest tiles that fit are made just large enough to cover it with the overlap, so all are the same size and no
thin leftover tile at the end sees too little of the picture, and no more pixels are computed than needed; a
tile's weight is zero over the outer quarter of an overlap, where the model saw the least context, and rises
linearly across the middle half, so the two weights of a seam add up to one.
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


Span = tuple[int, int]  # (start, size) of a tile along one axis, in input pixels


def tile_layout(length: int, tile: int, overlap: int, align: int = 1) -> list[Span]:
    """The tiles along an axis of `length` px: the fewest of at most `tile` px that overlap by at least `overlap`,
    each just large enough, spread evenly, starting on multiples of `align` (a window-attention model then sees
    each tile's windows where it sees the whole picture's) and ending at the axis's end."""
    if length <= tile:
        return [(0, length)]
    units, unit_tile = math.ceil(length / align), max(1, tile // align)
    unit_overlap = min(math.ceil(overlap / align), unit_tile - 1)
    if units <= unit_tile:
        return [(0, length)]
    count = math.ceil((units - unit_overlap) / (unit_tile - unit_overlap))
    size = math.ceil((units + (count - 1) * unit_overlap) / count)  # ≤ unit_tile: count·(tile − overlap) ≥ units − overlap
    starts = [round(i * (units - size) / (count - 1)) * align for i in range(count)]
    return [(start, min(length, start + size * align) - start) for start in starts]


def _ramp(length: int) -> torch.Tensor:
    """Rising weights over an overlap of `length` output px: 0 on the outer quarter, linear over the middle half."""
    import torch

    centre = (torch.arange(length, dtype=torch.float32) + 0.5) / length  # 0..1 across the overlap
    return ((centre - 0.25) / 0.5).clamp(0.0, 1.0)


def _axis_weights(spans: list[Span], index: int, scale: int) -> torch.Tensor:
    """Weights along one axis of tile `index` (in output px), ramped where it overlaps its neighbours."""
    import torch

    start, size = spans[index]
    weights = torch.ones(size * scale)
    if index > 0 and (shared := (sum(spans[index - 1]) - start) * scale) > 0:
        weights[:shared] = torch.minimum(weights[:shared], _ramp(shared))
    if index < len(spans) - 1 and (shared := (start + size - spans[index + 1][0]) * scale) > 0:
        weights[-shared:] = torch.minimum(weights[-shared:], _ramp(shared).flip(0))
    return weights


def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
              overlap: int, out_channels: int, align: int = 1) -> torch.Tensor:
    """`model` over `image` (1, C, H, W) in tiles of at most `tile` px (0: whole) starting on multiples of
    `align`, blended; (1, out_channels, H·s, W·s) float32 on the CPU."""
    import torch

    _, _, height, width = image.shape
    if tile == 0 or (height <= tile and width <= tile):
        return model(image).float().cpu()
    rows_of, cols_of = tile_layout(height, tile, overlap, align), tile_layout(width, tile, overlap, align)
    out = torch.zeros(1, out_channels, height * scale, width * scale)
    total = torch.zeros(1, 1, height * scale, width * scale)
    for iy, (y, tile_h) in enumerate(rows_of):
        weight_y = _axis_weights(rows_of, iy, scale)
        for ix, (x, tile_w) in enumerate(cols_of):
            piece = model(image[:, :, y:y + tile_h, x:x + tile_w]).float().cpu()  # (1, C_out, tile_h·s, tile_w·s)
            weight = torch.outer(weight_y, _axis_weights(cols_of, ix, scale)) + _WEIGHT_FLOOR
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
                            tile: int, overlap: int, out_channels: int, align: int = 1) -> torch.Tensor:
    """`run_tiled`, halving the tile while the device runs out of memory (ComfyUI's rule), to MIN_TILE_ON_OOM."""
    import torch

    while True:
        try:
            return run_tiled(model, image, scale, tile, overlap, out_channels, align)
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
