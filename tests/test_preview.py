"""Live previews (sdart.preview): A1111's cheap latent-to-RGB map, per model family."""

from __future__ import annotations

import numpy as np
import torch

from sdart.images.preview import LATENT_RGB_FACTORS, latent_preview


def test_preview_maps_each_latent_pixel_to_rgb_with_the_family_factors():
    latents = torch.zeros(2, 4, 3, 5)
    latents[0, 0] = 1.0  # image 0: channel 0 everywhere
    latents[0, 3, 1, 2] = 2.0  # plus channel 3 at one pixel
    latents[1] = 9.0  # image 1 is not previewed
    image = latent_preview(latents, "sd1")
    assert image.size == (5, 3) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    factors = np.array(LATENT_RGB_FACTORS["sd1"])
    expected_plain = np.round(np.clip((factors[0] + 1) / 2, 0, 1) * 255)
    expected_spot = np.round(np.clip((factors[0] + 2 * factors[3] + 1) / 2, 0, 1) * 255)
    assert (pixels[0, 0] == expected_plain).all() and (pixels[1, 2] == expected_spot).all()


def test_sdxl_has_its_own_factors_and_unknown_latents_get_no_preview():
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert np.asarray(latent_preview(latents, "sdxl")).tolist() != np.asarray(latent_preview(latents, "sd1")).tolist()
    assert latent_preview(latents, "flux") is None
    assert latent_preview(torch.zeros(1, 16, 8, 8), "sd1") is None  # 16-channel latents: the factors don't fit
