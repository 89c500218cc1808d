"""Step cache: reuse the UNet's deep features between denoising steps (DeepCache, Ma et al. 2023, arXiv:2312.00858).

Adjacent denoising steps change the UNet's deep (low-resolution) features very little. Every `interval`-th step
runs the whole UNet and keeps the feature map that enters the last up block's second sub-block; the steps in
between run only the shallowest branch (conv_in → first down sub-block → last two up sub-blocks → conv_out) on
top of that kept feature. It is DeepCache's uniform schedule with `cache_branch_id=0`.

The cost: cached steps are approximations, so the image differs from the uncached one (measured in
benchmarks/RESULTS.md and tests/test_speed.py); the speed-up depends on how much of the UNet the shallow branch is.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch


@dataclass
class StepCacheState:
    interval: int
    calls: int = 0  # UNet calls since the last reset
    full: int = 0
    cached: int = 0
    last_timestep: float | None = None
    feature: torch.Tensor | None = field(default=None, repr=False)  # (B, C, H, W) entering up_blocks[-1] sub-block 1

    def reset(self) -> None:
        self.calls = self.full = self.cached = 0
        self.last_timestep = None
        self.feature = None


def _has_attentions(block) -> bool:
    return getattr(block, "attentions", None) is not None and len(block.attentions) > 0


def supports_step_cache(unet) -> bool:
    """The shallow branch needs a standard UNet2DConditionModel: ≥3 resnets in the last up block."""
    up = getattr(unet, "up_blocks", None)
    down = getattr(unet, "down_blocks", None)
    return bool(up and down) and len(up[-1].resnets) >= 3 and len(down[0].resnets) >= 1


def enable_step_cache(unet, interval: int = 3) -> StepCacheState:
    """Patch `unet.forward` in place; returns the state. Call `reset_step_cache(unet)` before each denoising
    run (the Engine does); without it, a rising timestep is taken as the start of a new run."""
    if interval < 2:
        raise ValueError(f"step cache interval = {interval}: use 2 or more (1 would never reuse anything)")
    if not supports_step_cache(unet):
        raise ValueError(f"step cache: {type(unet).__name__} is not a UNet2DConditionModel with SD's block layout")
    if hasattr(unet, "_sdart_step_cache"):
        unet._sdart_step_cache.interval = interval
        return unet._sdart_step_cache
    state = StepCacheState(interval)
    full_forward = unet.forward
    up = unet.up_blocks[-1]
    # The output of sub-block 0 of the last up block is what the cached steps start from.
    keep = up.attentions[0] if _has_attentions(up) else up.resnets[0]

    def remember(module, args, output):
        state.feature = (output[0] if isinstance(output, tuple) else output).detach()

    keep.register_forward_hook(remember)

    def forward(self, sample, timestep, encoder_hidden_states, *args, return_dict: bool = True, **kwargs):
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        if state.last_timestep is not None and t > state.last_timestep:
            state.reset()  # a new image started (timesteps fall within one run)
        state.last_timestep = t
        extra = args or {k: v for k, v in kwargs.items() if v is not None and k not in ("cross_attention_kwargs",
                                                                                         "added_cond_kwargs")}
        reusable = (state.feature is not None and state.calls % state.interval != 0 and not extra
                    and state.feature.shape[0] == sample.shape[0])
        state.calls += 1
        if not reusable:
            state.full += 1
            return full_forward(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        state.cached += 1
        out = _shallow_forward(self, sample, timestep, encoder_hidden_states, state.feature,
                               kwargs.get("added_cond_kwargs"), kwargs.get("cross_attention_kwargs"))
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)

    unet.forward = types.MethodType(forward, unet)
    unet._sdart_step_cache = state
    return state


def reset_step_cache(unet) -> None:
    """Forget the kept feature: the next UNet call runs in full. Call it before each new denoising run."""
    state = getattr(unet, "_sdart_step_cache", None)
    if state is not None:
        state.reset()


def disable_step_cache(unet) -> None:
    if hasattr(unet, "_sdart_step_cache"):
        del unet.forward  # back to the class's forward (the hook only stores a reference; harmless)
        del unet._sdart_step_cache


def _shallow_forward(unet, sample, timestep, encoder_hidden_states, feature, added_cond_kwargs, cross_attention_kwargs):
    """conv_in → down_blocks[0] sub-block 0 → (kept deep feature) → up_blocks[-1] sub-blocks 1, 2 → conv_out."""
    # 1. Time (and SDXL text_time) embedding, as UNet2DConditionModel.forward computes it.
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states,
                             added_cond_kwargs=added_cond_kwargs or {})
    emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    context = unet.process_encoder_hidden_states(encoder_hidden_states, added_cond_kwargs or {})
    # 2. Shallow down path: (B, C0, H, W) at full latent resolution.
    h0 = unet.conv_in(sample)
    down = unet.down_blocks[0]
    h1 = down.resnets[0](h0, emb)
    if _has_attentions(down):
        h1 = down.attentions[0](h1, encoder_hidden_states=context, cross_attention_kwargs=cross_attention_kwargs,
                                return_dict=False)[0]
    # 3. Shallow up path from the kept deep feature; skips pair up the way the full forward pairs them.
    up = unet.up_blocks[-1]
    hidden = feature
    for index, skip in ((1, h1), (2, h0)):
        hidden = up.resnets[index](torch.cat([hidden, skip], dim=1), emb)
        if _has_attentions(up):
            hidden = up.attentions[index](hidden, encoder_hidden_states=context,
                                          cross_attention_kwargs=cross_attention_kwargs, return_dict=False)[0]
    # 4. Output head.
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)
