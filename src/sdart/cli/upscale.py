"""The `sdart upscale` command: pictures → larger PNGs, by A1111 upscaler name, with their infotext kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from sdart.cli import options as o
from sdart.cli.common import configure_logging, err, friendly_errors, out

DEFAULT_SCALE = 4.0  # A1111's Extras tab starts at 4
# ExtrasUpscale field → the option that sets it, for error messages.
FLAGS = {"upscaler_1": "--upscaler", "upscaler_2": "--upscaler-2", "scale": "--scale", "width": "--width"}


def upscale(
    images: list[Path] = typer.Argument(..., help="Pictures to upscale (PNG, JPEG, WebP, …)."),
    upscaler: str = typer.Option(..., "--upscaler", "-u", help="Lanczos, Nearest, or a model's name in the upscalers folder (file stem, e.g. 4x-UltraSharp; A1111's names such as \"R-ESRGAN 4x+\" work too)."),
    scale: Optional[float] = typer.Option(None, "--scale", "-s", help="Upscale by this factor \\[default: 4]."),
    width: Optional[int] = typer.Option(None, "--width", "-W", help="Upscale to this width; with --height, to exactly that size (centre-cropped unless --no-crop)."),
    height: Optional[int] = typer.Option(None, "--height", "-H", help="Upscale to this height (see --width)."),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="With --width and --height: crop to exactly that size (else cover it)."),
    upscaler_2: Optional[str] = typer.Option(None, "--upscaler-2", help="A second upscaler blended over the first (A1111's upscaler 2)."),
    upscaler_2_visibility: float = typer.Option(0.5, "--upscaler-2-visibility", min=0.0, max=1.0, help="How much of --upscaler-2 shows, 0 to 1."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Models run in tiles this many pixels wide (0: the whole picture) \\[default: 512] \\[env: SDART_UPSCALER_TILE]."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Pixels that neighbouring tiles share and blend \\[default: 32] \\[env: SDART_UPSCALER_OVERLAP]."),
    upscaler_dir: o.UpscalerDir = None,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where PNGs go \\[default: outputs] \\[env: SDART_OUTPUT_DIR]."),
    device: o.Device = None,
    dtype: o.DType = None,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable results on stdout."),
    debug: o.Debug = False,
) -> None:
    """Upscale pictures with Lanczos, Nearest or an upscaler model (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, SPAN, …);
    each PNG keeps the picture's infotext, extended with A1111's `Postprocess upscale by` and `Postprocess upscaler`."""
    configure_logging(debug)
    with friendly_errors(debug):
        from sdart.images.initimage import check_init_image
        from sdart.images.output import ensure_writable_dir
        from sdart.settings import load_settings
        from sdart.upscalers.extras import Runner
        from sdart.upscalers.files import UpscalerError

        # 1. Inputs, all checked before any picture is worked on.
        step, one_side = _step(upscaler, scale, width, height, crop, upscaler_2, upscaler_2_visibility)
        for path in images:
            try:
                check_init_image(path)
            except ValueError as exc:
                raise ValueError(f"image = {str(path)!r}: {exc}") from None
        settings = load_settings(upscaler_dir=upscaler_dir, output_dir=output_dir, device=device, dtype=dtype,
                                 upscaler_tile=tile, upscaler_overlap=overlap)
        runner = Runner(settings.upscaler_dir, settings.upscaler_tile, settings.upscaler_overlap, settings.device,
                        settings.dtype)
        try:
            runner.check(step)
        except UpscalerError as exc:
            raise ValueError(_flagged(exc)) from None
        folder = ensure_writable_dir(settings.output_dir)
        # 2. Each picture, saved as soon as it is done.
        done = [_upscale_one(path, step, one_side, runner, folder) for path in images]
        _report(done, as_json)


def _step(upscaler: str, scale: float | None, width: int | None, height: int | None, crop: bool,
          upscaler_2: str | None, visibility: float) -> tuple[Any, tuple[str, int] | None]:
    """The ExtrasUpscale the options ask for, and the one side ("width"/"height", pixels) to scale each picture to
    when only one is given."""
    from sdart.upscalers.extras import ExtrasUpscale
    from sdart.upscalers.names import NONE, canonical_name

    if canonical_name(upscaler) == NONE:
        raise ValueError(f"--upscaler {NONE}: does nothing; use Lanczos for a plain resize, or a model")
    if scale is not None and (width is not None or height is not None):
        raise ValueError("--scale: give a scale or --width/--height, not both")
    for flag, value in (("--width", width), ("--height", height)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} = {value}: must be at least 1 pixel")
    second = dict(upscaler_2=upscaler_2 or NONE, upscaler_2_visibility=visibility if upscaler_2 else 0.0)
    if width is not None and height is not None:
        return ExtrasUpscale(upscaler, resize_mode=1, width=width, height=height, crop=crop, **second), None
    one_side = ("width", width) if width is not None else ("height", height) if height is not None else None
    return ExtrasUpscale(upscaler, scale=scale if scale is not None else DEFAULT_SCALE, **second), one_side


def _upscale_one(path: Path, step: Any, one_side: tuple[str, int] | None, runner: Any, folder: Path) -> dict[str, Any]:
    from dataclasses import replace

    from sdart.images.initimage import open_init_image
    from sdart.images.output import save_image_as
    from sdart.upscalers.extras import extras_upscale, png_texts
    from sdart.upscalers.files import UpscalerError

    picture = open_init_image(path)
    source_info = dict(picture.info)  # the source's texts, which the result carries on
    if one_side is not None:  # the factor that takes this picture's side to the one asked for
        side, pixels = one_side
        step = replace(step, scale=pixels / (picture.width if side == "width" else picture.height))
    started = time.perf_counter()
    try:
        with err.status(f"upscaling {escape(path.name)} with {escape(step.upscaler_1)}…"):
            result, info = extras_upscale(picture, step, runner)
    except UpscalerError as exc:
        raise ValueError(_flagged(exc)) from None
    target = _free_name(folder, path.stem, step)
    save_image_as(result, None, target, more_text=png_texts(source_info, info))
    return {"input": str(path), "path": str(target), "size": list(result.size), "seconds": time.perf_counter() - started}


def _flagged(exc: Exception) -> str:
    """An UpscalerError's message led by the option it is about."""
    flag = FLAGS.get(getattr(exc, "field", None) or "")
    return f"{flag}: {exc}" if flag else str(exc)


def _free_name(folder: Path, stem: str, step: Any) -> Path:
    """`STEM-x4.png` (or `STEM-1024x768.png`) in `folder`, numbered on when taken: nothing is overwritten."""
    label = f"{step.width}x{step.height}" if step.resize_mode == 1 else f"x{step.scale:g}"
    candidate = folder / f"{stem}-{label}.png"
    number = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{label}-{number}.png"
        number += 1
    return candidate


def _report(done: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"images": done}, indent=2))
        return
    for record in done:
        width, height = record["size"]
        out.print(f"{escape(record['path'])}  {width}×{height}", highlight=False)
    err.print(f"[green]{len(done)} picture(s)[/] in {sum(r['seconds'] for r in done):.1f} s")
