"""Correctness of each fast path on tiny models: what it changes in the numbers, measured and bounded.
(Speed itself is measured by benchmarks/run.py, never asserted here.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdart.speed.options import SpeedOptions, apply_speed
from sdart.speed.quant import Int8Conv2d, Int8Linear, quantize_int8, quantize_tensor
from sdart.speed.stepcache import _shallow_forward, enable_step_cache
from sdart.testing import build_tiny_pipeline


def _run(pipe, steps: int = 4, seed: int = 0) -> np.ndarray:
    """(H, W, 3) floats in 0..1 for one seeded image."""
    out = pipe("a red fox", num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(seed),
               output_type="np")
    return out.images[0]


@pytest.fixture
def pipe():
    p = build_tiny_pipeline("sd15")
    p.set_progress_bar_config(disable=True)
    return p


def test_channels_last_and_fused_qkv_keep_the_image(pipe):
    before = _run(pipe)
    apply_speed(pipe, SpeedOptions(channels_last=True, fuse_qkv=True), torch.device("cpu"))
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    fused = [m for m in pipe.unet.modules() if getattr(m, "fused_projections", False)]
    assert fused and all(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in fused)
    # The separate projections the fused processor never reads are gone (cross-attention still reads to_q).
    assert all(not hasattr(m, "to_k") and not hasattr(m, "to_v") for m in fused)
    assert all(hasattr(m, "to_q") == m.is_cross_attention for m in fused)
    after = _run(pipe)
    assert np.abs(after - before).max() < 1e-4  # fp32 rounding only


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_shallow_branch_with_this_steps_feature_is_the_full_unet(kind):
    """The cached path is exact when the kept feature is fresh: it only skips what it reuses."""
    unet = build_tiny_pipeline(kind).unet
    state = enable_step_cache(unet, 3)
    size = unet.config.sample_size
    torch.manual_seed(0)
    sample = torch.randn(2, 4, size, size)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)} if kind == "sdxl" else None
    with torch.no_grad():
        full = unet(sample, torch.tensor(500), context, added_cond_kwargs=added, return_dict=False)[0]
        shallow = _shallow_forward(unet, sample, torch.tensor(500), context, state.feature, added, None)
    torch.testing.assert_close(shallow, full, atol=1e-5, rtol=1e-5)


def test_step_cache_schedule_and_image_difference(pipe):
    plain = _run(pipe, steps=6)
    state = enable_step_cache(pipe.unet, 3)
    cached = _run(pipe, steps=6)
    # PNDM makes 7 UNet calls for 6 steps: full on calls 0, 3, 6, shallow on the other 4.
    assert (state.full, state.cached) == (3, 4)
    again = _run(pipe, steps=6)  # a new run resets the cache (the timestep rises again)
    assert (state.full, state.cached) == (3, 4)
    np.testing.assert_array_equal(again, cached)
    diff = np.abs(cached - plain)
    assert 0 < diff.mean() < 0.02  # an approximation: close to, not equal to, the uncached image


def test_int8_weights_round_trip_within_half_a_step():
    weight = torch.randn(64, 32, 3, 3)
    q, scale = quantize_tensor(weight)
    assert q.dtype == torch.int8
    error = (q.float() * scale[:, None, None, None] - weight).abs()
    assert (error <= scale[:, None, None, None] / 2 + 1e-6).all()


def test_int8_quantization_in_blocks_matches_one_pass(monkeypatch):
    """Blocks of output channels (bounding the load's fp32 temporaries) give exactly the one-pass result, in the
    weight's own memory layout."""
    import sdart.speed.quant

    weight = torch.randn(10, 6, 3, 3).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    flat = weight.float().reshape(10, -1)
    one_pass_scale = flat.abs().amax(dim=1) / 127
    one_pass = torch.round(flat / one_pass_scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(weight.shape)
    monkeypatch.setattr(sdart.speed.quant, "QUANTIZE_BLOCK_ELEMENTS", 3 * 6 * 9)  # blocks of 3 channels, last one 1
    q, scale = quantize_tensor(weight)
    assert torch.equal(q, one_pass) and torch.equal(scale, one_pass_scale)
    assert q.is_contiguous(memory_format=torch.channels_last)


def test_int8_layers_match_float_layers_closely():
    torch.manual_seed(0)
    linear, conv = torch.nn.Linear(64, 32), torch.nn.Conv2d(16, 8, 3, padding=1)
    x, image = torch.randn(4, 64), torch.randn(1, 16, 8, 8)
    assert torch.allclose(Int8Linear(linear, torch.float32)(x), linear(x), atol=0.02)
    qconv = Int8Conv2d(conv, torch.float32)
    assert torch.allclose(qconv(image), conv(image), atol=0.02)
    nhwc = image.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(qconv(nhwc), conv(image), atol=0.02)


def test_int8_pipeline_saves_memory_and_changes_pixels_a_little(pipe):
    before = _run(pipe)
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    saved = quantize_int8(pipe.unet) + quantize_int8(pipe.text_encoder)
    assert saved > 0.5 * unet_bytes
    after = _run(pipe)
    diff = np.abs(after - before)
    assert 0 < diff.mean() < 0.02, f"int8 changed pixels by {diff.mean() * 255:.2f} levels on average"


def test_engine_applies_step_cache_and_int8(tiny_model_dir):
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", step_cache=2,
                                                           quantize="int8"))
    unet = engine.model.pipeline.unet
    assert unet._sdart_step_cache.interval == 2
    assert any(isinstance(m, (Int8Linear, Int8Conv2d)) for m in unet.modules())
    engine.generate(prompt="a fox", steps=1, seed=1, progress=False)  # same first timestep as the next run
    result = engine.generate(prompt="a fox", steps=4, seed=1, progress=False)
    assert len(result.images) == 1
    state = unet._sdart_step_cache
    assert (state.full, state.cached) == (2, 2)  # calls 0 and 2 full: the 1-step run left nothing behind


def test_step_cache_setting_is_validated():
    from pydantic import ValidationError

    from sdart.settings import Settings

    with pytest.raises(ValidationError):
        Settings(step_cache=-1)
    with pytest.raises(ValidationError):
        Settings(quantize="int4")
    with pytest.raises(ValueError, match="interval"):
        enable_step_cache(build_tiny_pipeline("sd15").unet, 1)
