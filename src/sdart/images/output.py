"""Saving images: numbered PNG names (`00012-42.png`: counter, seed), never overwriting, never half-written."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from sdart.images.infotext import png_info

_NUMBERED = re.compile(r"^(\d{5,})-")


class OutputError(OSError):
    """The output folder can't be used; the message names it and says why."""


def ensure_writable_dir(directory: str | Path) -> Path:
    """Create the folder if needed and prove it is writable, before any work is spent on images."""
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".sdart-write-test-"):
            pass
    except FileExistsError:
        raise OutputError(f"output_dir = {str(path)!r}: exists and is not a folder") from None
    except OSError as exc:
        raise OutputError(f"output_dir = {str(path)!r}: not writable ({exc.strerror or exc})") from None
    return path


def next_number(directory: Path) -> int:
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=0) + 1


def png_bytes(image: Image.Image) -> bytes:
    """`image` encoded as PNG, in memory (previews, API answers, Jupyter)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_temp_png(image: Image.Image, infotext: str | None, folder: Path,
                    more_text: dict[str, str] | None = None) -> str:
    """The PNG, complete and fsynced, under a hidden temporary name in `folder`; the caller moves it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".sdart-", suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            text = infotext or None
            image.save(tmp, format="PNG", pnginfo=png_info(text, more_text) if text or more_text else None)
            tmp.flush()
            os.fsync(tmp.fileno())
    except BaseException:
        os.unlink(tmp_name)
        raise
    return tmp_name


def save_image(image: Image.Image, infotext: str | None, seed: int, directory: str | Path) -> Path:
    """Write `image` as `NNNNN-SEED.png` with its infotext; returns the path.

    The PNG is written to a temporary file and hard-linked into place: a link fails when the name exists
    (so nothing is overwritten, even by a concurrent writer), and the file under the final name is complete.
    """
    folder = ensure_writable_dir(directory)
    tmp_name = _write_temp_png(image, infotext, folder)
    try:
        number = next_number(folder)
        while True:
            target = folder / f"{number:05d}-{seed}.png"
            try:
                os.link(tmp_name, target)
                return target
            except FileExistsError:
                number += 1
    finally:
        os.unlink(tmp_name)


def save_image_as(image: Image.Image, infotext: str | None, target: str | Path,
                  more_text: dict[str, str] | None = None) -> Path:
    """Write `image` under a chosen name (batch outputs are named by their key), replacing any file there.

    Same discipline as `save_image`: the PNG is complete and fsynced under a temporary name first, then renamed
    into place, so a reader (or a run resumed after kill -9) sees either the old file or the whole new one.
    Replacing is right here because a key names one image: a file under it is a leftover of the same work.
    `more_text`: PNG text chunks besides `parameters` (A1111's `postprocessing`, for one).
    """
    target = Path(target)
    tmp_name = _write_temp_png(image, infotext, ensure_writable_dir(target.parent), more_text)
    try:
        os.replace(tmp_name, target)
    except BaseException:
        os.unlink(tmp_name)
        raise
    return target
