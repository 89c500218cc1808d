"""A1111's postprocessing upscale step (the Extras tab; scripts/postprocessing_upscale.py) and what it writes.

Scale by (`resize_mode` 0) or to a size (1, then centre-cropped to exactly that size when `crop`), with upscaler 1,
optionally blended with upscaler 2 at `upscaler_2_visibility`. Upscaler 1 "None" leaves the picture as it is,
as in A1111. The keys A1111 writes (`Postprocess upscale by`, `Postprocess upscale to`, `Postprocess crop to`,
`Postprocess upscaler`, `Postprocess upscaler 2`) go where A1111 puts them, the PNG's `postprocessing` and
`extras` texts, and are also added to its `parameters` infotext when it has one, which is kept otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from sdart.images.infotext import PNG_KEY, add_parameters, parse_infotext, quote
from sdart.upscalers.files import UpscalerError
from sdart.upscalers.names import NONE, canonical_name
from sdart.upscalers.pixel import check_upscaler, target_size, upscale
from sdart.upscalers.tiles import DEFAULT_OVERLAP, DEFAULT_TILE

POSTPROCESS_KEYS = ("postprocessing", "extras")  # the PNG texts A1111's extras tab writes its line under


@dataclass(frozen=True)
class ExtrasUpscale:
    """One postprocessing upscale, in A1111's terms (ExtrasBaseRequest's fields)."""

    upscaler_1: str = NONE
    upscaler_2: str = NONE
    upscaler_2_visibility: float = 0.0
    resize_mode: int = 0  # 0: scale by `scale`; 1: to width × height
    scale: float = 2.0
    width: int = 512
    height: int = 512
    crop: bool = True  # resize_mode 1: centre-crop to exactly width × height

    def __post_init__(self) -> None:  # built-in names in A1111's spelling, whatever case the client sent
        for field in ("upscaler_1", "upscaler_2"):
            if isinstance(getattr(self, field), str):
                object.__setattr__(self, field, canonical_name(getattr(self, field)))


@dataclass(frozen=True)
class Runner:
    """Where and how models run: the upscalers folder, tiles, device and precision."""

    folder: str | Path | None = None
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    device: str | None = None
    dtype: str = "auto"

    @classmethod
    def of_settings(cls, settings: Any, device: str | None = None) -> Runner:
        """The upscalers of a generating process (hires fix, the server's extras endpoints): its folder and tiles,
        on `device` (default its settings'), in float32 when its models run in float32, else in the fast precision
        each architecture allows. Its half precision is not forced on an upscaler: DAT, HAT, SwinIR and others don't
        run in float16, and `choose_dtype` refuses a precision asked for by name (`sdart upscale --dtype`)."""
        dtype = "float32" if settings.dtype == "float32" else "auto"
        return cls(settings.upscaler_dir, settings.upscaler_tile, settings.upscaler_overlap,
                   device if device is not None else settings.device, dtype)

    def check(self, step: ExtrasUpscale) -> None:
        """UpscalerError (with its field) for an upscaler name that names nothing, before any work is done."""
        for field in ("upscaler_1", "upscaler_2"):
            try:
                check_upscaler(getattr(step, field), self.folder)
            except UpscalerError as exc:
                raise UpscalerError(str(exc), field) from None

    def upscale(self, image: Image.Image, name: str, size: tuple[int, int], field: str) -> Image.Image:
        """`upscale()` with these settings; an UpscalerError says which `field` named the upscaler."""
        try:
            return upscale(image, name, size=size, folder=self.folder, tile=self.tile, overlap=self.overlap,
                           device=self.device, dtype=self.dtype)
        except UpscalerError as exc:
            raise UpscalerError(str(exc), exc.field or field) from None


def extras_upscale(image: Image.Image, step: ExtrasUpscale, runner: Runner) -> tuple[Image.Image, dict[str, Any]]:
    """The upscaled picture and the `Postprocess …` keys to record, in A1111's order (empty for upscaler "None").
    UpscalerError's `field` names the ExtrasUpscale field at fault."""
    info: dict[str, Any] = {}
    runner.check(step)
    if step.upscaler_1 == NONE:
        if step.upscaler_2 != NONE and step.upscaler_2_visibility > 0:
            raise UpscalerError(f"upscaler_1 = {NONE!r}: the step is off, so upscaler_2 = {step.upscaler_2!r} would "
                                "not be applied; name upscaler_1", "upscaler_1")
        return image, info
    size = _size(image, step)
    if step.resize_mode == 1:
        info["Postprocess upscale to"] = f"{step.width}x{step.height}"
    else:
        info["Postprocess upscale by"] = f"{step.scale:g}"
    result = _fit(runner.upscale(image, step.upscaler_1, size, "upscaler_1"), step, info)
    info["Postprocess upscaler"] = step.upscaler_1
    if step.upscaler_2 != NONE and step.upscaler_2_visibility > 0:
        second = _fit(runner.upscale(image, step.upscaler_2, size, "upscaler_2"), step, {})
        result = Image.blend(result.convert(second.mode) if result.mode != second.mode else result, second,
                             step.upscaler_2_visibility)
        info["Postprocess upscaler 2"] = step.upscaler_2
    return result, info


def _size(image: Image.Image, step: ExtrasUpscale) -> tuple[int, int]:
    """The upscaled size: × scale, or (resize_mode 1) just covering width × height (A1111: by max of the ratios)."""
    try:
        if step.resize_mode != 1:
            return target_size(image.size, step.scale)
        wide = step.width / image.width >= step.height / image.height
        by = max(step.width / image.width, step.height / image.height)
        # the side that fits exactly is the one asked for (no float rounding); the other covers the box
        size = (step.width, round(image.height * by)) if wide else (round(image.width * by), step.height)
        return target_size(image.size, to=size)
    except ValueError as exc:
        raise UpscalerError(str(exc), "width" if step.resize_mode == 1 else "scale") from None


def _fit(image: Image.Image, step: ExtrasUpscale, info: dict[str, Any]) -> Image.Image:
    """resize_mode 1 with crop: the upscaled picture centred on a width × height canvas (A1111's crop)."""
    if step.resize_mode != 1 or not step.crop:
        return image
    canvas = Image.new(image.mode, (step.width, step.height))
    canvas.paste(image, (step.width // 2 - image.width // 2, step.height // 2 - image.height // 2))
    info["Postprocess crop to"] = f"{step.width}x{step.height}"
    return canvas


def postprocess_line(info: Mapping[str, Any]) -> str:
    """The keys as A1111 joins them: `Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+`."""
    return ", ".join(f"{key}: {quote(value)}" for key, value in info.items() if value is not None)


def png_texts(source_info: Mapping[Any, Any], info: Mapping[str, Any]) -> dict[str, str]:
    """The PNG text chunks of the result: the source picture's, its `parameters` extended by `info`, and A1111's
    `postprocessing` and `extras` texts holding `info` (when there is any)."""
    texts = {key: value for key, value in source_info.items() if isinstance(key, str) and isinstance(value, str)}
    if not info:
        return texts
    line = postprocess_line(info)
    parameters = texts.get(PNG_KEY)
    if parameters and parse_infotext(parameters).params:
        texts[PNG_KEY] = add_parameters(parameters, dict(info))
    return {**texts, **dict.fromkeys(POSTPROCESS_KEYS, line)}
