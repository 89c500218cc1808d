"""Seeds → the noise a pass starts from, with A1111's variation seeds (modules/rng.py `ImageRNG`, learned from its
behaviour): the seed's noise blended towards the subseed's by spherical interpolation, and `seed_resize_from`,
which draws the seed's noise at another size and pastes its centre into noise of the real size.

Each image has its own generator, seeded with its seed; its noise is drawn from that generator exactly as diffusers'
`randn_tensor` draws it (shape (1, C, H, W), the generator's device, the latents' dtype), so without variation the
picture is the one diffusers alone makes, and the generator goes on to feed the sampler's noise (ancestral
samplers) from the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Variation:
    """A1111's variation-seed settings of a request: the subseed's weight, and the size the seed's noise is drawn
    at (None: the real size)."""

    strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (width, height) in pixels

    @classmethod
    def of(cls, request) -> Variation:
        resize = (request.seed_resize_from_w, request.seed_resize_from_h)
        return cls(request.subseed_strength, resize if min(resize) > 0 else None)

    @property
    def active(self) -> bool:
        return self.strength > 0 or self.resize_from is not None


def draw(generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """(1, C, H, W) standard normal noise, as diffusers' randn_tensor draws one image's."""
    return torch.randn((1, *shape), generator=generator, device=generator.device, dtype=dtype)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (t = 0) to `high` (t = 1) of (C, H, W) noises, the angle taken per channel
    and column over the height axis, as A1111's slerp does; nearly parallel noises are interpolated linearly."""
    low_unit = low / low.norm(dim=1, keepdim=True)
    high_unit = high / high.norm(dim=1, keepdim=True)
    cos = (low_unit * high_unit).sum(dim=1).clamp(-1.0, 1.0)  # (C, W)
    if cos.mean() > 0.9995:
        return torch.lerp(low, high, t)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / sin).unsqueeze(1) * low + (torch.sin(t * omega) / sin).unsqueeze(1) * high


def image_noise(shape: tuple[int, int, int], seed: int, subseed: int, variation: Variation,
                generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """One image's (1, C, H, W) starting noise; `generator` is the image's own (seeded with `seed`), and is left
    where the sampler carries on from."""
    if not variation.active:
        return draw(generator, shape, dtype)
    device = generator.device
    channels, height, width = shape
    drawn_shape = shape
    if variation.resize_from is not None:
        drawn_shape = (channels, variation.resize_from[1] // 8, variation.resize_from[0] // 8)
    seeded = generator if drawn_shape == shape else torch.Generator(device).manual_seed(seed)
    noise = draw(seeded, drawn_shape, dtype)[0]
    if variation.strength > 0:
        other = draw(torch.Generator(device).manual_seed(subseed), drawn_shape, dtype)[0]
        noise = slerp(variation.strength, noise.float(), other.float()).to(dtype)
    if drawn_shape != shape:
        # The real-size noise of the seed, with the centre of the drawn noise pasted over its centre (the drawn
        # noise cropped where it is larger).
        full = draw(generator, shape, dtype)[0]
        dy, dx = (height - drawn_shape[1]) // 2, (width - drawn_shape[2]) // 2
        h, w = min(height, drawn_shape[1]), min(width, drawn_shape[2])
        full[:, max(dy, 0):max(dy, 0) + h, max(dx, 0):max(dx, 0) + w] = \
            noise[:, max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]
        noise = full
    return noise.unsqueeze(0)


def batch_noise(shape: tuple[int, int, int], seeds: list[int], subseeds: list[int], variation: Variation,
                generators: list[torch.Generator], dtype: torch.dtype) -> torch.Tensor:
    """(B, C, H, W): each image's noise from its own generator (on the generators' device)."""
    return torch.cat([image_noise(shape, seed, subseed, variation, generator, dtype)
                      for seed, subseed, generator in zip(seeds, subseeds, generators)])


def use_noise(scheduler, noise: torch.Tensor) -> None:
    """Make an img2img pass noise its starting picture with `noise` instead of the draw diffusers makes for it:
    its pipelines noise the picture through `scheduler.add_noise(picture, their_noise, timestep)` (inpainting
    does so again each step outside the mask). The scheduler is built for this one pass, so the change ends
    with it."""
    add_noise = type(scheduler).add_noise

    def add_this_noise(original, _drawn, timesteps):
        return add_noise(scheduler, original, noise.to(original.device, original.dtype), timesteps)

    scheduler.add_noise = add_this_noise
