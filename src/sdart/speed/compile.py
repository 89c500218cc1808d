"""torch.compile of the UNet, with Inductor's caches kept between processes."""

from __future__ import annotations

import os

import torch

from sdart.speed.options import SpeedOptions


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
