"""Upscaler networks built from spandrel's own architecture classes, with random weights, saved as state dicts:
tiny ones for tests (milliseconds a call) and a Real-ESRGAN x4plus-shaped one for benchmarks. No download.

Each is detected by spandrel from its state dict alone, like a file from the web.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdart.upscalers.arches import spandrel


def _builders() -> dict[str, Callable[[], Any]]:
    """Architecture id → a small network of it (sizes chosen so spandrel still detects each)."""
    spandrel()  # spandrel's architecture modules importable, with or without torchvision
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    window = dict(img_size=16, in_chans=3, num_heads=[2], upscale=2, upsampler="pixelshuffle", resi_connection="1conv")
    return {
        "ESRGAN": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
        "Compact": lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4),  # Real-ESRGAN v3
        "SwinIR": lambda: SwinIR(patch_size=1, embed_dim=12, depths=[2], window_size=4, mlp_ratio=2.0, **window),
        "HAT": lambda: HAT(embed_dim=12, depths=[2], window_size=4, compress_ratio=3, squeeze_factor=4,
                           overlap_ratio=0.5, mlp_ratio=2.0, **window),
        # DAT's channel attention divides the width by 16: 16 is its smallest
        "DAT": lambda: DAT(embed_dim=16, split_size=[2, 4], depth=[2], expansion_factor=2.0, **window),
        "SPAN": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
    }


TINY_ARCHITECTURES = ("ESRGAN", "Compact", "SwinIR", "HAT", "DAT", "SPAN")
TINY_SCALES = {"ESRGAN": 4, "Compact": 4, "SwinIR": 2, "HAT": 2, "DAT": 2, "SPAN": 2}


def tiny_upscaler(architecture: str, seed: int = 0) -> Any:
    """A tiny `architecture` network (one of TINY_ARCHITECTURES), seeded, in eval mode."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _builders()[architecture]().eval()


def save_tiny_upscaler(path: str | Path, architecture: str, seed: int = 0) -> Path:
    """The tiny network's state dict in `path` (.pth or .safetensors)."""
    return _save(tiny_upscaler(architecture, seed).state_dict(), Path(path))


def realesrgan_x4plus_shaped(seed: int = 0) -> Any:
    """An RRDBNet of Real-ESRGAN x4plus's shape (64 features, 23 blocks, 4×; 16.7 M weights), random weights."""
    import torch

    spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4).eval()


def _save(state: dict[str, Any], path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path
