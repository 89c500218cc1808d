"""Token downsampling: self-attention at the UNet's top attention level attends to a downsampled copy of its feature map
(ToDo, Smith et al. 2024, arXiv:2402.13573).

At 512² the top level has 64×64 = 4096 tokens, and attention takes 44 % of an SD 1.5 UNet call on the CPU
(1.58 of 3.56 s, torch profiler), nearly all of it in the five self-attention layers of that level: 0.29 s
each, bound by the softmax's 8×2×4096×4096 exponentials (benchmarks/NOTES.md). With keys and values average-pooled by `factor` in each direction, every query still gets its own
output but attends to factor² times fewer tokens. Neighbouring tokens at that level are nearly alike, so the image
changes a little (measured in benchmarks/RESULTS.md); the deeper levels, the cross-attention and everything else
are untouched.

Keys and values are pooled after their projections: a projection is linear, so pooling its output equals
projecting the pooled tokens, and the fused QKV and int8 layers are used as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LatentGrid:
    """The token grid of the UNet's top attention level for the current call. Attention layers see flattened
    tokens and need the grid back to pool them; a forward pre-hook records the latents' (height, width), and each
    downsampler on the way to that level halves them, rounding up (stride-2 convs with padding 1)."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.latents: tuple[int, int] | None = None

    def record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.latents = (int(sample.shape[-2]), int(sample.shape[-1]))

    @property
    def shape(self) -> tuple[int, int] | None:
        if self.latents is None:
            return None
        scale = 2**self.level
        return (-(-self.latents[0] // scale), -(-self.latents[1] // scale))


class DownsampledKVAttnProcessor:
    """Wraps an attention layer's processor; runs the pooled version for self-attention at the top attention
    level, and the wrapped processor for everything else (cross-attention, masks, deeper levels)."""

    def __init__(self, inner, factor: int, grid: LatentGrid):
        self.inner, self.factor, self.grid = inner, factor, grid

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        grid = self.grid.shape
        plain = (encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3
                 or grid is None or hidden_states.shape[1] != grid[0] * grid[1]
                 or attn.spatial_norm is not None or attn.group_norm is not None
                 or attn.norm_q is not None or attn.norm_k is not None)
        if plain:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        key, value = (_pool_tokens(t, grid, self.factor) for t in (key, value))
        batch, heads = hidden_states.shape[0], attn.heads

        def by_head(t: torch.Tensor) -> torch.Tensor:  # (B, N, heads·d) → (B, heads, N, d)
            return t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(by_head(query), by_head(key), by_head(value))
        out = out.transpose(1, 2).reshape(batch, -1, query.shape[-1])
        out = attn.to_out[1](attn.to_out[0](out))  # projection, dropout
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _pool_tokens(tokens: torch.Tensor, grid: tuple[int, int], factor: int) -> torch.Tensor:
    """(B, H·W, C) tokens → (B, ⌈H/f⌉·⌈W/f⌉, C), averaging f×f patches (edge patches over what they hold)."""
    batch, _, channels = tokens.shape
    image = tokens.transpose(1, 2).reshape(batch, channels, *grid)
    pooled = F.avg_pool2d(image, factor, ceil_mode=True, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2)


def _top_attention_level(unet: nn.Module) -> int:
    """How many downsamplers come before the first down block with attention: 0 for SD 1.x/2.x (64×64 tokens at
    512²), 1 for SDXL, whose top level has no attention (64×64 tokens at 1024²)."""
    level = 0
    for block in getattr(unet, "down_blocks", []):
        if getattr(block, "attentions", None):
            return level
        level += bool(getattr(block, "downsamplers", None))
    return level


def enable_token_downsampling(unet: nn.Module, factor: int) -> int:
    """Wrap the processor of every self-attention layer in `unet` (after fusing/quantizing, which replace
    processors and layers). Returns how many layers were wrapped; factor 1 changes nothing."""
    from diffusers.models.attention_processor import Attention

    if factor < 1:
        raise ValueError(f"token downsampling = {factor}: use 1 (off) or more")
    if factor == 1:
        return 0
    grid = LatentGrid(_top_attention_level(unet))
    wrapped = 0
    for module in unet.modules():
        if isinstance(module, Attention) and not module.is_cross_attention:
            inner = module.processor
            if isinstance(inner, DownsampledKVAttnProcessor):
                inner = inner.inner
            module.set_processor(DownsampledKVAttnProcessor(inner, factor, grid))
            wrapped += 1
    if wrapped:
        unet.register_forward_pre_hook(grid.record, with_kwargs=True)
    return wrapped
