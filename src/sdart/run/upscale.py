"""The hires pass's upscale: in latent space for A1111's "Latent…" modes (torch interpolation of the first pass's
latents with A1111's mode and antialias flag, sdart.upscalers.names), or in pixels (`None`, `Lanczos`, `Nearest`
or an upscaler model, sdart.upscalers.pixel) before the VAE encodes the picture again."""

from __future__ import annotations

from pathlib import Path

from sdart.run.hires_size import HiresSize
from sdart.upscalers.extras import Runner
from sdart.upscalers.names import LATENT_UPSCALE_MODES, is_latent_mode


def upscale_latents(latents, name: str, size: HiresSize):
    """(B, C, h, w) latents → (B, C, H, W) at the hires size, the overhang cropped as A1111 does."""
    import torch.nn.functional as F

    mode, antialias = LATENT_UPSCALE_MODES[name]
    height, width = size.upscale_height // size.latent_scale, size.upscale_width // size.latent_scale
    upscaled = F.interpolate(latents, size=(height, width), mode=mode, antialias=antialias)
    left, top, right, bottom = size.crop_box()
    return upscaled[:, :, top:bottom, left:right]


def hires_upscaler_problem(name: str, folder: str | Path | None) -> str | None:
    """Why the hires pass couldn't upscale with `name` (hr_upscaler) from `folder` (the message names the upscaler;
    the caller names the field as its front end does), or None when it can. Cheap: a model's file is found, not
    read. Checked before the first pass, and by the front ends before a job is queued."""
    from sdart.upscalers.pixel import check_upscaler as check_pixel_upscaler

    if is_latent_mode(name):
        return None
    try:
        check_pixel_upscaler(name, folder)
    except ValueError as exc:
        return str(exc)
    return None


def upscale_picture(image, name: str, size: HiresSize, runner: Runner):
    """A decoded first pass → the hires picture (PIL), upscaled with `name` (sdart.upscalers, with the engine's
    upscaler settings) and cropped as A1111 does."""
    upscaled = runner.upscale(image, name, (size.upscale_width, size.upscale_height), "hr_upscaler")
    return upscaled.crop(size.crop_box(size.latent_scale))
