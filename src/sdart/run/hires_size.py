"""The size a hires-fix pass draws at, by A1111's rules (modules/processing.py, `calculate_target_resolution`):
`hr_resize_x`/`hr_resize_y` both 0 → the first pass's size × `hr_scale`; one of them set → that side, the other
keeping the aspect ratio; both set → the picture is scaled to cover that box and the overhang is cropped, centred,
in whole latent pixels (8 pixels for SD; whatever the model's VAE scales by)."""

from __future__ import annotations

from dataclasses import dataclass

LATENT_SCALE = 8  # pixels per latent pixel: the VAE's scale factor, 8 for every SD family (A1111's opt_f)


@dataclass(frozen=True)
class HiresSize:
    """Upscale the first pass to `upscale_width × upscale_height`, then crop `crop_x × crop_y` latent pixels
    (split between the two sides, the extra one on the right/bottom)."""

    upscale_width: int
    upscale_height: int
    crop_x: int = 0
    crop_y: int = 0
    latent_scale: int = LATENT_SCALE

    @property
    def latent_width(self) -> int:
        return self.upscale_width // self.latent_scale - self.crop_x

    @property
    def latent_height(self) -> int:
        return self.upscale_height // self.latent_scale - self.crop_y

    @property
    def width(self) -> int:
        """The picture's width after the second pass (whole latent pixels)."""
        return self.latent_width * self.latent_scale

    @property
    def height(self) -> int:
        return self.latent_height * self.latent_scale

    def crop_box(self, scale: int = 1) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of what is kept, in latent pixels × `scale` (latent_scale for pixels)."""
        left, top = self.crop_x // 2, self.crop_y // 2
        return (left * scale, top * scale, (left + self.latent_width) * scale, (top + self.latent_height) * scale)


def hires_size(width: int, height: int, scale: float, resize_x: int = 0, resize_y: int = 0, *,
               latent_scale: int = LATENT_SCALE) -> HiresSize:
    """Where the first pass (`width × height`) is upscaled to, and what is cropped of it."""
    if not resize_x and not resize_y:
        return HiresSize(int(width * scale), int(height * scale), latent_scale=latent_scale)
    if not resize_y:
        return HiresSize(resize_x, resize_x * height // width, latent_scale=latent_scale)
    if not resize_x:
        return HiresSize(resize_y * width // height, resize_y, latent_scale=latent_scale)
    # Both given: cover the box (the side that fits is exact, the other overhangs), then crop the overhang.
    if width / height < resize_x / resize_y:
        upscale_width, upscale_height = resize_x, resize_x * height // width
    else:
        upscale_width, upscale_height = resize_y * width // height, resize_y
    return HiresSize(upscale_width, upscale_height, (upscale_width - resize_x) // latent_scale,
                     (upscale_height - resize_y) // latent_scale, latent_scale)
