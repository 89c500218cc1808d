"""The hires pass's upscale: in latent space for A1111's "Latent…" modes (torch interpolation of the first pass's
latents), or in pixels (`None`, `Lanczos`, `Nearest` or an upscaler model) before the VAE encodes the picture again.

The latent modes are A1111's (modules/shared_items.py `latent_upscale_modes`): an interpolation mode of
torch.nn.functional.interpolate and whether it antialiases (which only matters when shrinking).
"""

from __future__ import annotations

from typing import Any

from sdart.run.hires_size import HiresSize

# name → (torch interpolate mode, antialias)
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# Pixel upscalers that need no model. "None" is A1111's plain resize (Lanczos to the size).
PIXEL_UPSCALERS = ("None", "Lanczos", "Nearest")
BUILT_IN = (*LATENT_UPSCALE_MODES, *PIXEL_UPSCALERS)


def find_upscaler(name: Any) -> str:
    """The upscaler's canonical spelling (built-in names match in any case); any other name is an upscaler
    model's, looked up when the run needs it. None means A1111's default, "Latent"."""
    if name is None:
        return "Latent"
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"must name an upscaler: {', '.join(BUILT_IN)} or an upscaler model")
    for known in BUILT_IN:
        if known.lower() == name.strip().lower():
            return known
    return name.strip()


def is_latent(name: str) -> bool:
    return name in LATENT_UPSCALE_MODES


def upscale_latents(latents, name: str, size: HiresSize):
    """(B, C, h, w) latents → (B, C, H, W) at the hires size, the overhang cropped as A1111 does."""
    import torch.nn.functional as F

    mode, antialias = LATENT_UPSCALE_MODES[name]
    height, width = size.upscale_height // size.latent_scale, size.upscale_width // size.latent_scale
    upscaled = F.interpolate(latents, size=(height, width), mode=mode, antialias=antialias)
    left, top, right, bottom = size.crop_box()
    return upscaled[:, :, top:bottom, left:right]


def check_upscaler(name: str) -> None:
    """Raise before the first pass when the hires pass couldn't upscale with `name`."""
    if name not in BUILT_IN:
        raise ValueError(f"hr_upscaler = {name!r}: no upscaler of that name; built in: {', '.join(BUILT_IN)}")


def upscale_picture(image, name: str, size: HiresSize, *, device=None):
    """A decoded first pass → the hires picture (PIL), upscaled with `name` and cropped as A1111 does."""
    from PIL import Image

    target = (size.upscale_width, size.upscale_height)
    if name in ("None", "Lanczos"):
        upscaled = image.resize(target, Image.Resampling.LANCZOS)
    elif name == "Nearest":
        # As A1111's upscalers: by the scale that covers the target, then Lanczos to the exact size.
        scale = max(target[0] / image.width, target[1] / image.height)
        upscaled = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.NEAREST)
        if upscaled.size != target:
            upscaled = upscaled.resize(target, Image.Resampling.LANCZOS)
    else:
        check_upscaler(name)
        raise ValueError(f"hr_upscaler = {name!r} upscales latents, not pictures")
    return upscaled.crop(size.crop_box(size.latent_scale))
