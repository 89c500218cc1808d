"""Live previews: a running job's latents drawn as a small RGB picture without the VAE.

Each latent pixel's four channels map linearly to RGB, the mapping A1111 calls "Approximate cheap" (factors fitted
to SD's VAE, one set for SD 1.x/2.x and one for SDXL, whose VAE differs). The picture has the latents' size (1/8
of the image per side) and costs one small matrix product, so a preview can be drawn at every poll without
slowing the denoising down.
"""

from __future__ import annotations

import torch
from PIL import Image

# (latent channel, RGB) factors; the output is in [-1, 1] like the VAE's.
_SD_FACTORS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
_SDXL_FACTORS = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                 (-0.3730, -0.2499, -0.2088))
LATENT_RGB_FACTORS = {"sd1": _SD_FACTORS, "sd2": _SD_FACTORS, "sdxl": _SDXL_FACTORS}


def latent_preview(latents: torch.Tensor, family: str) -> Image.Image | None:
    """The first image of a (B, 4, h, w) latent batch as an h×w RGB picture; None for a model family (or latent
    shape) the factors don't fit."""
    factors = LATENT_RGB_FACTORS.get(family)
    if factors is None or latents.ndim != 4 or latents.shape[1] != len(factors):
        return None
    first = latents[0].detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", first, torch.tensor(factors))
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")
