"""img2img's starting picture and inpainting's mask: read from a file (or a base64 data: URL), turned upright,
and fitted to the output size as A1111 does.

A1111's `resize_mode`: 0 "Just resize" (stretch to the size), 1 "Crop and resize" (fill the size, centre crop),
2 "Resize and fill" (fit inside; the borders get the picture stretched to the full size behind it), 3 "Just
resize (latent upscale)" (resized like 0 here: sdart resizes pixels, never latents).
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import ExifTags, Image, ImageFilter, ImageOps, UnidentifiedImageError

# Larger pictures are refused before decoding: a small compressed file can hold a huge picture (a
# "decompression bomb"), and the output is at most a few megapixels anyway.
MAX_PIXELS = 50_000_000


def open_init_image(source: str | Path) -> Image.Image:
    """The picture (a file path or a base64 data: URL) as upright RGB, EXIF orientation applied, its texts kept in
    `info` (a PNG's `parameters`, …). ValueError says what is wrong."""
    readable = _readable(source)  # a data: URL is decoded once
    _check_header(readable)
    try:
        with Image.open(readable) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except OSError as exc:  # a header that reads but pixels that don't: truncated, corrupt
        raise ValueError(f"not a readable image ({exc})") from None


def check_init_image(source: str | Path) -> str | Path:
    """Cheap check for request validation: the file exists (or the data: URL decodes) and its header is an
    image's; pixels are not decoded. Returns `source`, a data: URL as the DecodedDataUrl holding its bytes."""
    if is_data_url(source):
        return decode_data_url(source)  # decode_base64_image checks the header
    _check_header(_readable(source))
    return source


def picture_size(source: str | Path) -> tuple[int, int]:
    """(width, height) of the picture as it will be used, upright, read from its header: no pixels decoded."""
    with Image.open(_readable(source)) as image:
        width, height = image.size
        turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # a quarter turn swaps the sides
    return (height, width) if turned else (width, height)


def is_data_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith("data:")


class DecodedDataUrl(str):
    """A data: URL whose base64 has been decoded and found to hold an image's header, carrying the bytes (`raw`):
    what reads it next reads those, so a picture sent with a request is decoded once however often the request is
    checked (GenerationRequest keeps it through `replace`). It compares, hashes and serialises as the URL it is."""

    raw: bytes


def decode_data_url(value: str) -> DecodedDataUrl:
    """A base64 image, bare or as a data: URL, decoded: the data: URL (a bare one as PNG's) with its bytes.
    ValueError says what is wrong."""
    if isinstance(value, DecodedDataUrl):
        return value
    raw = decode_base64_image(value)
    url = DecodedDataUrl(value if is_data_url(value) else f"data:image/png;base64,{value}")
    url.raw = raw
    return url


def decode_base64_image(value: str) -> bytes:
    """The bytes of a base64 image, bare or as a `data:[type];base64,...` URL, checked to be an image's.
    ValueError says what is wrong."""
    if is_data_url(value):
        header, _, value = value.partition(",")
        if not header.endswith(";base64"):
            raise ValueError("a data: URL must be base64 (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    _check_header(io.BytesIO(raw))
    return raw


def _check_header(source: Path | io.BytesIO) -> None:
    """Raises ValueError unless `source` opens as a picture within MAX_PIXELS; leaves a BytesIO at its start."""
    try:
        with Image.open(source) as image:
            size = image.size
    except UnidentifiedImageError:
        raise ValueError("not a readable image (no image format recognised)") from None
    except Image.DecompressionBombError:  # PIL refuses to open it at all: far over the limit below
        raise ValueError(f"the picture is over the {MAX_PIXELS // 10**6} megapixel limit; scale it down first") from None
    except OSError as exc:
        raise ValueError(f"not a readable image ({exc})") from None
    finally:
        if isinstance(source, io.BytesIO):
            source.seek(0)
    if size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"a {size[0]}×{size[1]} picture is over the {MAX_PIXELS // 10**6} megapixel limit; "
                         "scale it down first")


def _readable(source: str | Path) -> Path | io.BytesIO:
    if is_data_url(source):
        return io.BytesIO(decode_data_url(source).raw)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError("no such file")
    return path


def open_mask(source: str | Path, width: int, height: int, mode: int, blur: int, invert: bool) -> Image.Image:
    """The inpainting mask as a width×height greyscale picture (255 = redraw), fitted like the picture it goes
    with, inverted if asked, its edge blurred by `blur` pixels (A1111's "mask blur")."""
    mask = fit(open_init_image(source), width, height, mode).convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask


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
