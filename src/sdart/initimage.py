"""img2img's starting picture: read from a file, turned upright, and fitted to the output size as A1111 does.

A1111's `resize_mode`: 0 "Just resize" (stretch to the size), 1 "Crop and resize" (fill the size, centre crop),
2 "Resize and fill" (fit inside; the borders get the picture stretched to the full size behind it), 3 "Just
resize (latent upscale)" (resized like 0 here: sdart resizes pixels, never latents).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

RESIZE_MODES = ("just resize", "crop and resize", "resize and fill", "just resize (latent upscale)")


def open_init_image(path: str | Path) -> Image.Image:
    """The picture at `path` as upright RGB (EXIF orientation applied). ValueError says what is wrong."""
    check_init_image(path)
    try:
        with Image.open(Path(path).expanduser()) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except OSError as exc:  # a header that reads but pixels that don't: truncated, corrupt
        raise ValueError(f"not a readable image ({exc})") from None


def check_init_image(path: str | Path) -> None:
    """Cheap check for request validation: the file exists and its header is an image's (pixels not decoded)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError("no such file")
    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a readable image ({exc})") from None


def default_size(image_size: tuple[int, int], native: int) -> tuple[int, int]:
    """The picture's aspect ratio with its longer side at the model's native size, in multiples of 8."""
    width, height = image_size
    scale = native / max(width, height)
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)


def fit(image: Image.Image, width: int, height: int, mode: int = 0) -> Image.Image:
    """`image` at width×height by A1111 resize mode `mode` (see the module docstring)."""
    if image.size == (width, height):
        return image
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    if mode == 2:
        canvas = image.resize((width, height), Image.LANCZOS)
        inner = ImageOps.contain(image, (width, height), Image.LANCZOS)
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    return image.resize((width, height), Image.LANCZOS)
