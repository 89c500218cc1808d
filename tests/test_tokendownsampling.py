"""Token downsampling (sdart.tokendownsampling): the pooled attention is exact where pooling loses nothing, only
top-level self-attention is touched, and the engine option changes the picture a little and says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdart.speed.tokendownsampling import DownsampledKVAttnProcessor, _pool_tokens, enable_token_downsampling
from sdart.testing import build_tiny_pipeline


def test_pooling_averages_each_patch_including_partial_edge_patches():
    grid = (3, 5)
    image = torch.arange(2 * 4 * 15, dtype=torch.float32).reshape(2, 4, *grid)  # (B, C, H, W)
    tokens = image.flatten(2).transpose(1, 2)  # (B, H·W, C), row-major like diffusers' Transformer2DModel
    pooled = _pool_tokens(tokens, grid, 2)
    assert pooled.shape == (2, 2 * 3, 4)  # ⌈3/2⌉ × ⌈5/2⌉ patches
    expected_corner = image[:, :, 0:2, 0:2].mean(dim=(2, 3))
    expected_edge = image[:, :, 2:3, 4:5].mean(dim=(2, 3))  # the bottom-right patch holds one pixel
    assert torch.allclose(pooled[:, 0], expected_corner) and torch.allclose(pooled[:, -1], expected_edge)


@pytest.mark.parametrize("fused", [False, True])
def test_pooled_attention_equals_full_attention_when_patches_are_uniform(fused):
    """A key repeated four times gets four times the weight of one copy, which the softmax normalises away: on a
    feature map that is constant over each 2×2 patch, attending to the pooled tokens is exactly full attention.
    This pins down the geometry (a wrong reshape would pool unrelated tokens)."""
    torch.manual_seed(0)
    unet = build_tiny_pipeline("sd15").unet.eval()
    if fused:
        unet.fuse_qkv_projections()
    attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1  # the tiny UNet's top attention level
    height, width = 6, 4
    coarse = torch.randn(2, attn.query_dim, height // 2, width // 2)
    tokens = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).flatten(2).transpose(1, 2)
    with torch.no_grad():
        full = attn(tokens)
        enable_token_downsampling(unet, 2)
        assert isinstance(attn.processor, DownsampledKVAttnProcessor)
        attn.processor.grid.latents = (2 * height, 2 * width)  # what the UNet's pre-hook records in a real call
        assert attn.processor.grid.shape == (height, width)  # one downsampler above this level
        pooled = attn(tokens)
        noise = tokens + 0.1 * torch.randn_like(tokens)  # patches no longer uniform: now it is an approximation
        assert not torch.allclose(attn(noise), attn.processor.inner(attn, noise), atol=1e-4)
    assert torch.allclose(pooled, full, atol=1e-5)


def test_only_self_attention_is_wrapped_and_factor_1_is_off():
    unet = build_tiny_pipeline("sd15").unet
    assert enable_token_downsampling(unet, 1) == 0
    wrapped = enable_token_downsampling(unet, 2)
    from diffusers.models.attention_processor import Attention

    layers = [m for m in unet.modules() if isinstance(m, Attention)]
    assert wrapped == sum(not m.is_cross_attention for m in layers) > 0
    for layer in layers:
        assert isinstance(layer.processor, DownsampledKVAttnProcessor) == (not layer.is_cross_attention)
    with pytest.raises(ValueError, match="token downsampling = 0"):
        enable_token_downsampling(unet, 0)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.float32) / 255


def test_engine_option_changes_the_picture_a_little_and_records_it(tiny_model_dir):
    from sdart.engine import Engine
    from sdart.settings import Settings

    def engine(**options):
        return Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", **options))

    plain, pooled = engine(), engine(token_downsampling=2)
    size = dict(prompt="a red fox", steps=4, seed=3, width=64, height=48, progress=False)  # a non-square grid
    before, after = plain.generate(**size), pooled.generate(**size)
    diff = np.abs(_pixels(after) - _pixels(before))
    assert 0 < diff.mean() < 0.05, f"token downsampling moved pixels by {diff.mean() * 255:.2f} levels on average"
    assert "Token downsampling: 2" in after.infotexts[0]
    assert "Token downsampling" not in before.infotexts[0]
