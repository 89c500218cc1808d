"""A1111's upscaler names: the ones that need no model file, the latent modes of hires fix, and the full list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdart.upscalers.files import list_upscaler_files

NONE = "None"  # A1111: no upscaler (hires fix and `upscale()` resize with Lanczos; the extras tab skips the step)
PIXEL_UPSCALERS = (NONE, "Lanczos", "Nearest")  # A1111's UpscalerNone, UpscalerLanczos, UpscalerNearest

# A1111's `shared.latent_upscale_modes`: name → (torch.nn.functional.interpolate mode, antialias).
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscaler_names(folder: str | Path | None) -> list[str]:
    """Every pixel upscaler a request may name, in A1111's order: None, Lanczos, Nearest, then the models."""
    return [*PIXEL_UPSCALERS, *(f.name for f in list_upscaler_files(folder))]


BUILT_IN = (*LATENT_UPSCALE_MODES, *PIXEL_UPSCALERS)


def canonical_name(name: str) -> str:
    """A built-in upscaler's own spelling for `name` in any case (A1111 clients send "lanczos" as well); any other
    name, an upscaler model's, stripped."""
    folded = name.strip().lower()
    return next((known for known in BUILT_IN if known.lower() == folded), name.strip())


def is_latent_mode(name: str) -> bool:
    return name in LATENT_UPSCALE_MODES


def find_upscaler(name: Any) -> str:
    """The upscaler's canonical spelling (built-in names match in any case); any other name is an upscaler
    model's, looked up when the run needs it. None means A1111's default, "Latent"."""
    if name is None:
        return "Latent"
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"must name an upscaler: {', '.join(BUILT_IN)} or an upscaler model")
    return canonical_name(name)
