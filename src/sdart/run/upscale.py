"""The hires pass's upscale: in latent space for A1111's "Latent…" modes (torch interpolation of the first pass's
latents with A1111's mode and antialias flag, sdart.upscalers.names), or in pixels (`None`, `Lanczos`, `Nearest`
or an upscaler model, sdart.upscalers.pixel) before the VAE encodes the picture again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdart.run.hires_size import HiresSize
from sdart.upscalers.names import BUILT_IN, LATENT_UPSCALE_MODES, canonical_name, is_latent_mode


@dataclass(frozen=True)
class Upscaling:
    """Where upscaler models are found and how they run (Settings.upscaler_dir, upscaler_tile, upscaler_overlap)."""

    folder: Path | None = None
    tile: int = 512
    overlap: int = 32
    device: Any = None


def find_upscaler(name: Any) -> str:
    """The upscaler's canonical spelling (built-in names match in any case); any other name is an upscaler
    model's, looked up when the run needs it. None means A1111's default, "Latent"."""
    if name is None:
        return "Latent"
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"must name an upscaler: {', '.join(BUILT_IN)} or an upscaler model")
    return canonical_name(name)


def upscale_latents(latents, name: str, size: HiresSize):
    """(B, C, h, w) latents → (B, C, H, W) at the hires size, the overhang cropped as A1111 does."""
    import torch.nn.functional as F

    mode, antialias = LATENT_UPSCALE_MODES[name]
    height, width = size.upscale_height // size.latent_scale, size.upscale_width // size.latent_scale
    upscaled = F.interpolate(latents, size=(height, width), mode=mode, antialias=antialias)
    left, top, right, bottom = size.crop_box()
    return upscaled[:, :, top:bottom, left:right]


def check_upscaler(name: str, upscaling: Upscaling) -> None:
    """Raise, naming hr_upscaler, before the first pass when the hires pass couldn't upscale with `name` (cheap:
    a model's file is found, not read)."""
    from sdart.upscalers.pixel import check_upscaler as check_pixel_upscaler

    if not is_latent_mode(name):
        try:
            check_pixel_upscaler(name, upscaling.folder)
        except ValueError as exc:
            raise ValueError(f"hr_upscaler = {name!r}: {exc}") from None


def upscale_picture(image, name: str, size: HiresSize, upscaling: Upscaling):
    """A decoded first pass → the hires picture (PIL), upscaled with `name` (sdart.upscalers) and cropped as
    A1111 does."""
    from sdart.upscalers.pixel import upscale

    upscaled = upscale(image, name, size=(size.upscale_width, size.upscale_height), folder=upscaling.folder,
                       tile=upscaling.tile, overlap=upscaling.overlap, device=upscaling.device)
    return upscaled.crop(size.crop_box(size.latent_scale))
