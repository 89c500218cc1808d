"""The `sdart generate` command: a prompt (or a PNG's parameters) → PNGs with their infotext."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from sdart.cli import options as o
from sdart.cli.common import EXIT_INTERRUPTED, cancel_on_ctrl_c, configure_logging, err, friendly_errors, out


def _request_fields_from_image(path: Path) -> dict[str, Any]:
    from sdart.images.infotext import parse_infotext, read_infotext

    if not path.is_file():
        raise ValueError(f"--from = {str(path)!r}: no such file")
    try:
        text = read_infotext(path)
    except OSError as exc:
        raise ValueError(f"--from = {str(path)!r}: not a readable image ({exc})") from None
    if not text:
        raise ValueError(f"--from = {str(path)!r}: the image carries no `parameters` text")
    parsed = parse_infotext(text)
    fields = parsed.request_fields()
    if "Model" in parsed.params:
        fields["model"] = parsed.params["Model"]
    return fields


def _size(text: str | None, option: str) -> tuple[int, int] | None:
    """WxH → (width, height)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{option} = {text!r}: must be WIDTHxHEIGHT, like 1024x768")
    return int(match.group(1)), int(match.group(2))


def _pass_fields(*, hires: bool | None, hires_scale, hires_size, hires_upscaler, hires_steps, hires_strength,
                 hires_sampler, hires_scheduler, hires_prompt, hires_negative, hires_cfg, subseed, subseed_strength,
                 seed_resize_from, refiner, refiner_switch_at) -> dict[str, Any]:
    """The request fields of the hires, variation-seed and refiner options (None: not given)."""
    hires_options = dict(hr_scale=hires_scale, hr_upscaler=hires_upscaler, hr_second_pass_steps=hires_steps,
                         hr_sampler_name=hires_sampler, hr_scheduler=hires_scheduler, hr_prompt=hires_prompt,
                         hr_negative_prompt=hires_negative, hr_cfg=hires_cfg)
    if (box := _size(hires_size, "--hires-size")) is not None:
        hires_options.update(hr_resize_x=box[0], hr_resize_y=box[1])
    given = [name for name, value in hires_options.items() if value is not None] or hires_strength is not None
    if hires is False and given:
        raise ValueError("--no-hires: the --hires-* options given need hires fix on")
    fields = {**hires_options, "enable_hr": True if given else hires, "subseed": subseed,
              "subseed_strength": subseed_strength, "refiner_checkpoint": refiner,
              "refiner_switch_at": refiner_switch_at}
    if (resize := _size(seed_resize_from, "--seed-resize-from")) is not None:
        fields.update(seed_resize_from_w=resize[0], seed_resize_from_h=resize[1])
    return fields


def _drop_unavailable(fields: dict[str, Any], key: str, what: str, hint: str) -> None:
    """A model named by --from's image that isn't here is dropped, and the user told."""
    from sdart.models.errors import ModelLoadError
    from sdart.models.resolve import resolve

    try:
        resolve(fields[key])
    except ModelLoadError:
        err.print(f"[yellow]note:[/] the image was made with {what} {escape(repr(fields[key]))}, which is not "
                  f"available here; {hint}.")
        fields.pop(key)



def generate(
    prompt: Optional[str] = typer.Argument(None, help="What to draw. Optional with --from."),
    negative_prompt: o.NegativePrompt = None,
    steps: o.Steps = None,
    cfg_scale: o.CfgScale = None,
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the first image (-1: random) \\[default: -1]."),
    width: o.Width = None,
    height: o.Height = None,
    n_iter: Optional[int] = typer.Option(None, "--n-iter", "-n", help="How many batches to make (images = n × batch size)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per batch (one model call)."),
    sampler_name: o.Sampler = None,
    scheduler: o.Scheduler = None,
    clip_skip: o.ClipSkip = None,
    model: o.Model = None,
    model_config_dir: o.ModelConfigDir = None,
    init_image: Optional[Path] = typer.Option(None, "--init-image", "-i", help="img2img: start from this picture instead of noise (size: its aspect ratio at the model's size, unless -W/-H)."),
    denoising_strength: Optional[float] = typer.Option(None, "--denoising-strength", "--strength", help="img2img: how much of the picture to redraw, 0 < s ≤ 1 \\[default: 0.75]."),
    resize_mode: Optional[int] = typer.Option(None, "--resize-mode", help="img2img, when -W/-H differ from the picture: 0 stretch, 1 crop, 2 fit and fill (A1111's modes) \\[default: 0]."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpainting (with --init-image): redraw only where this picture is white."),
    mask_blur: Optional[int] = typer.Option(None, "--mask-blur", help="Inpainting: soften the mask's edge by this many pixels \\[default: 4]."),
    invert_mask: Optional[bool] = typer.Option(None, "--invert-mask/--no-invert-mask", help="Inpainting: redraw where the mask is black instead."),
    hires: o.Hires = None,
    hires_scale: o.HiresScale = None,
    hires_size: o.HiresSize = None,
    hires_upscaler: o.HiresUpscaler = None,
    hires_steps: o.HiresSteps = None,
    hires_strength: o.HiresStrength = None,
    hires_sampler: o.HiresSampler = None,
    hires_scheduler: o.HiresScheduler = None,
    hires_prompt: o.HiresPrompt = None,
    hires_negative: o.HiresNegative = None,
    hires_cfg: o.HiresCfg = None,
    subseed: o.Subseed = None,
    subseed_strength: o.SubseedStrength = None,
    seed_resize_from: o.SeedResizeFrom = None,
    refiner: o.Refiner = None,
    refiner_switch_at: o.RefinerSwitchAt = None,
    from_image: Optional[Path] = typer.Option(None, "--from", help="Re-run the parameters stored in this PNG; other options override them."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where PNGs go \\[default: outputs] \\[env: SDART_OUTPUT_DIR]."),
    device: o.Device = None,
    dtype: o.DType = None,
    memory: o.Memory = None,
    lora: o.Lora = None,
    vae: o.Vae = None,
    rng: o.Rng = None,
    safety_checker: Optional[bool] = typer.Option(None, "--safety-checker/--no-safety-checker", help="Check images with the model's safety checker and report flagged ones."),
    compile: o.Compile = None,
    step_cache: o.StepCache = None,
    token_downsampling: o.TokenDownsampling = None,
    quantize: o.Quantize = None,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable results on stdout."),
    debug: o.Debug = False,
) -> None:
    """Generate images from a prompt and save them as PNGs with their parameters."""
    configure_logging(debug)
    with friendly_errors(debug):
        from sdart.images.output import ensure_writable_dir, save_image
        from sdart.request import GenerationRequest
        from sdart.settings import load_settings

        # 1. Request: the image's parameters (--from), then every option given on the command line.
        fields = _request_fields_from_image(from_image) if from_image else {}
        if fields.get("model") and model is None:
            _drop_unavailable(fields, "model", "model", "using the default model (pass --model to choose)")
        if fields.get("refiner_checkpoint") and refiner is None:
            _drop_unavailable(fields, "refiner_checkpoint", "refiner", "running without it (pass --refiner to choose)")
        if hires_strength is not None and denoising_strength is not None and hires_strength != denoising_strength:
            raise ValueError("--hires-strength: sets the same denoising_strength as --strength; give one")
        given = dict(prompt=prompt, negative_prompt=negative_prompt, steps=steps, cfg_scale=cfg_scale, seed=seed,
                     width=width, height=height, n_iter=n_iter, batch_size=batch_size, sampler_name=sampler_name,
                     scheduler=scheduler, clip_skip=clip_skip, model=model,
                     init_image=str(init_image) if init_image is not None else None,
                     denoising_strength=denoising_strength, resize_mode=resize_mode,
                     mask=str(mask) if mask is not None else None, mask_blur=mask_blur,
                     inpainting_mask_invert=invert_mask)
        given.update(_pass_fields(
            hires=hires, hires_scale=hires_scale, hires_size=hires_size, hires_upscaler=hires_upscaler,
            hires_steps=hires_steps, hires_strength=hires_strength, hires_sampler=hires_sampler,
            hires_scheduler=hires_scheduler, hires_prompt=hires_prompt, hires_negative=hires_negative,
            hires_cfg=hires_cfg, subseed=subseed, subseed_strength=subseed_strength,
            seed_resize_from=seed_resize_from, refiner=refiner, refiner_switch_at=refiner_switch_at))
        if hires_strength is not None:
            given["denoising_strength"] = hires_strength
        fields.update({k: v for k, v in given.items() if v is not None})
        if "prompt" not in fields:
            raise ValueError("prompt: missing; give a prompt (or --from IMAGE)")
        request = GenerationRequest.parse(fields)
        settings = load_settings(model_config_dir=model_config_dir, output_dir=output_dir, device=device,
                                 dtype=dtype, memory=memory, rng=rng, safety_checker=safety_checker, compile=compile,
                                 step_cache=step_cache, token_downsampling=token_downsampling, quantize=quantize, loras=lora, vae=vae)
        # 2. Output folder: checked before minutes are spent on images.
        folder = ensure_writable_dir(settings.output_dir)
        # 3. Model.
        from sdart.engine import Engine
        from sdart.run.progress import GenerationCancelled

        with err.status(f"loading {request.model or settings.model}…"):
            engine = Engine(request.model or settings.model, settings=settings)
        request = engine.resolve_request(request.replace(model=None))
        err.print(f"[dim]{escape(engine.reference)} · {engine.model.family} · {engine.device} · "
                  f"{str(engine.dtype).removeprefix('torch.')} · loaded in {engine.load_s:.1f} s · seed {request.seed}[/]")
        # 4. Generate, saving each batch as soon as it is decoded.
        saved: list[dict[str, Any]] = []
        timings: list[dict[str, float]] = []
        with cancel_on_ctrl_c() as cancel, _progress_bar(request) as on_step:
            try:
                for batch in engine.iter_batches(request, on_step=on_step, cancel=cancel):
                    timings.append(batch.timings)
                    for i, (image, text, image_seed) in enumerate(zip(batch.images, batch.infotexts, batch.seeds)):
                        path = save_image(image, text, image_seed, folder)
                        record = {"path": str(path), "seed": image_seed}
                        if batch.nsfw is not None:
                            record["nsfw"] = batch.nsfw[i]
                        saved.append(record)
            except GenerationCancelled:
                pass
        cancelled = len(saved) < request.images_total
        _report(saved, timings, engine, request, cancelled, as_json)
        if cancelled:
            raise typer.Exit(EXIT_INTERRUPTED)


def _report(saved, timings, engine, request, cancelled: bool, as_json: bool) -> None:
    from sdart.run.result import summarise_timings

    summary = summarise_timings(timings, max(len(saved), 1), engine.load_s)
    if as_json:
        print(json.dumps({
            "model": engine.reference, "device": str(engine.device), "dtype": str(engine.dtype).removeprefix("torch."),
            "request": request.model_dump(), "images": saved, "timings": summary, "cancelled": cancelled,
        }, indent=2))
        return
    for record in saved:
        flag = "  [red](flagged by the safety checker)[/]" if record.get("nsfw") else ""
        out.print(f"{escape(record['path'])}{flag}", highlight=False)
    if saved:
        err.print(f"[green]{len(saved)} image(s)[/] in {summary['total_s']:.1f} s "
                  f"({summary.get('it_per_s', 0):.2f} it/s)")
    if cancelled:
        err.print(f"[yellow]cancelled:[/] {len(saved)} of {request.images_total} images finished and saved")


@contextmanager
def _progress_bar(request):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("generating", total=None, rate="")

        def on_step(p) -> None:
            label = f"batch {p.iteration + 1}/{p.iterations}" if p.iterations > 1 else "generating"
            progress.update(task, total=p.total * p.iterations, completed=p.iteration * p.total + p.step,
                            description=label, rate=f"{p.it_per_s:.2f} it/s")

        yield on_step
