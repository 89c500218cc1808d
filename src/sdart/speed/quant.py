"""int8 weights: store Linear and Conv2d weights as int8 with one scale per output channel, compute in the
pipeline's dtype.

Weight-only quantization (symmetric, per output channel, round to nearest): the weights take a quarter of
fp32's bytes and half of bf16's, the activations stay in bf16/fp32. Each layer dequantizes its weight just
before use (a short-lived tensor of one layer's size), so it saves memory, not time. torch.ao's dynamic
quantization only covers Linear layers and needs fp32 activations; this covers the convolutions too and keeps bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdart.speed.memory import release_freed_memory

QUANTIZE_BLOCK_ELEMENTS = 2**22  # output channels quantized per pass: bounds the fp32 temporaries to 16 MB


def quantize_tensor(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, scale per output channel (O,)) with weight ≈ q * scale[:, None, ...].

    Works through the output channels in blocks: SD 1.5's largest conv (2560→1280, 3×3) would otherwise make
    several fp32 copies of 118 MB each at once, and those set the peak of an int8 load.
    """
    weight = weight.detach()
    # In the weight's own memory layout (channels_last stays channels_last: no later conversion copies it).
    q = torch.empty_like(weight, dtype=torch.int8)
    scale = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    per_channel = max(1, weight[0].numel())
    rows = max(1, QUANTIZE_BLOCK_ELEMENTS // per_channel)
    channel_dims = tuple(range(1, weight.dim()))
    for start in range(0, weight.shape[0], rows):
        block = weight[start:start + rows].to(torch.float32, copy=True)  # in-place ops below stay in the copy
        block_scale = (block.abs().amax(dim=channel_dims) if channel_dims else block.abs()).clamp_(min=1e-12) / 127
        block.div_(block_scale.view((-1,) + (1,) * len(channel_dims))).round_().clamp_(-127, 127)
        q[start:start + rows].copy_(block)
        scale[start:start + rows] = block_scale
    return q, scale


class _Int8Weight(nn.Module):
    def _init_weight(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        q, scale = quantize_tensor(weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(dtype))
        self.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False) if bias is not None else None
        self.compute_dtype = dtype

    def dequantized(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.qweight.dim() - 1)
        return self.qweight * self.scale.view(shape)  # int8 × compute dtype → compute dtype, one allocation

    @property
    def weight(self) -> torch.Tensor:  # what diffusers/peft read for dtype and shape checks
        return self.dequantized()


class Int8Linear(_Int8Weight):
    def __init__(self, linear: nn.Linear, dtype: torch.dtype, weight: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_weight(linear.weight if weight is None else weight, linear.bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(), self.bias)


class Int8Conv2d(_Int8Weight):
    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype, weight: torch.Tensor | None = None):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups, self.padding_mode = conv.dilation, conv.groups, conv.padding_mode
        if conv.padding_mode != "zeros":
            raise ValueError("int8 conv supports zero padding only")
        self._init_weight(conv.weight if weight is None else weight, conv.bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantized()
        if x.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


MIN_PARAMS = 256  # smaller layers stay as they are: nothing worth saving


def int8_replacement(layer: nn.Module, weight: torch.Tensor, dtype: torch.dtype) -> _Int8Weight | None:
    """The int8-weight version of `layer` holding `weight` (the layer's own, or one being loaded into it while the
    layer is still on the meta device), or None when the layer is not one that gets quantized. The bias is taken
    over as it is (possibly still on the meta device, to be filled in later)."""
    if type(layer) not in (nn.Linear, nn.Conv2d) or weight.numel() < MIN_PARAMS:
        return None
    if isinstance(layer, nn.Linear):
        return Int8Linear(layer, dtype, weight)
    if layer.padding_mode != "zeros":
        return None
    return Int8Conv2d(layer, dtype, weight)


def quantize_int8(model: nn.Module) -> int:
    """Replace Linear/Conv2d layers with ≥ MIN_PARAMS weights by int8-weight versions, in place.
    Returns how many bytes of weights were saved."""
    saved = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            weight = getattr(child, "weight", None)
            if not isinstance(weight, nn.Parameter):
                continue
            replacement = int8_replacement(child, weight, weight.dtype)
            if replacement is None:
                continue
            saved += weight.numel() * (weight.element_size() - 1)
            setattr(parent, name, replacement.to(weight.device))
            del child, weight
            release_freed_memory(collect=False)  # each layer's float temporaries, before the next layer's
    release_freed_memory()
    return saved
