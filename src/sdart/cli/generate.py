"""The `sdart generate` command: a prompt (or a PNG's parameters) → PNGs with their infotext."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from sdart.cli import options as o
from sdart.cli.common import EXIT_INTERRUPTED, cancel_on_ctrl_c, configure_logging, err, friendly_errors, out
from sdart.cli.pass_options import pass_fields


def _check_lora_tags(request, settings, image_params: dict[str, str] | None):
    """The prompt's `<lora:…>` names checked before a model is loaded (exit 2 naming the folder). A prompt taken
    from a picture (--from) finds renamed files by their `Lora hashes` and draws without the LoRAs this folder lacks,
    naming them (as a missing model is)."""
    from sdart.models.lorafiles import LoraFolder
    from sdart.run.loras import lookup_request_loras, names_by_hash

    folder = LoraFolder(settings.lora_dir)
    if image_params is not None:
        request = request.replace(prompt=names_by_hash(request.prompt, image_params.get("Lora hashes"), folder),
                                  missing_lora="warn")
    lookup_request_loras(request, folder)
    return request


def _hires_upscaler_here(request, settings, image):
    """An image's hires upscaler model that this machine lacks (--from): the hires pass upscales with Lanczos instead,
    and the user is told (as a missing model is)."""
    from sdart.cli.from_image import drop_model
    from sdart.run.upscale import hires_upscaler_problem

    # (a mistyped --upscaler-dir is refused by Settings, so this is a model the folder lacks)
    if request.enable_hr and hires_upscaler_problem(request.hr_upscaler, settings.upscaler_dir):
        err.print(f"[yellow]note:[/] the image was upscaled with {escape(repr(request.hr_upscaler))}, which is not "
                  "in the upscalers folder here; the hires pass uses Lanczos (pass --hires-upscaler or "
                  "--upscaler-dir to choose).")
        drop_model(image, "hr_upscaler", "Hires upscaler")
        return request.replace(hr_upscaler="Lanczos")
    return request


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
    emphasis: o.Emphasis = None,
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
    upscaler_dir: o.UpscalerDir = None,
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
    lora_dir: o.LoraDir = None,
    vae: o.Vae = None,
    embeddings_dir: o.EmbeddingsDir = None,
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
        from sdart.models.errors import ModelLoadError
        from sdart.models.resolve import resolve
        from sdart.request import GenerationRequest
        from sdart.settings import load_settings

        # 1. Request: the image's parameters (--from), then every option given on the command line.
        image = None
        fields: dict[str, Any] = {}
        if from_image:
            from sdart.cli.from_image import drop_model, read_from_image

            image = read_from_image(from_image, vae_dir=load_settings().vae_dir, sampler_given=sampler_name is not None)
            fields = image.fields
            if vae is not None:
                fields.pop("vae", None)  # --vae replaces the image's
            if fields.get("model") and model is None:
                try:
                    resolve(fields["model"])
                except ModelLoadError:
                    err.print(f"[yellow]note:[/] the image was made with model {escape(repr(fields['model']))}, which "
                              "is not available here; using the default model (pass --model to choose).")
                    drop_model(image)
            if fields.get("refiner_checkpoint") and refiner is None:
                try:
                    resolve(fields["refiner_checkpoint"])
                except ModelLoadError:
                    err.print(f"[yellow]note:[/] the image was made with refiner "
                              f"{escape(repr(fields['refiner_checkpoint']))}, which is not available here; running "
                              "without it (pass --refiner to choose).")
                    drop_model(image, "refiner_checkpoint", "Refiner")
            for note in image.notes:
                err.print(f"[yellow]note:[/] {escape(note)}")
            from_settings = image.settings
        else:
            from_settings = {}
        if hires_strength is not None and denoising_strength is not None and hires_strength != denoising_strength:
            raise ValueError("--hires-strength: sets the same denoising_strength as --strength; give one")
        given = dict(prompt=prompt, negative_prompt=negative_prompt, steps=steps, cfg_scale=cfg_scale, seed=seed,
                     width=width, height=height, n_iter=n_iter, batch_size=batch_size, sampler_name=sampler_name,
                     scheduler=scheduler, clip_skip=clip_skip, emphasis=emphasis, model=model,
                     init_image=str(init_image) if init_image is not None else None,
                     denoising_strength=denoising_strength, resize_mode=resize_mode,
                     mask=str(mask) if mask is not None else None, mask_blur=mask_blur,
                     inpainting_mask_invert=invert_mask)
        given.update(pass_fields(
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
                                 step_cache=step_cache if step_cache is not None else from_settings.get("step_cache"),
                                 token_downsampling=token_downsampling if token_downsampling is not None
                                 else from_settings.get("token_downsampling"),
                                 quantize=quantize or from_settings.get("quantize"), loras=lora,
                                 lora_dir=lora_dir, vae=vae, embeddings_dir=embeddings_dir,
                                 upscaler_dir=upscaler_dir)
        if image is not None and hires_upscaler is None:
            request = _hires_upscaler_here(request, settings, image)
        request = _check_lora_tags(request, settings, image.parsed.params if image is not None and prompt is None else None)
        # 2. Output folder: checked before minutes are spent on images.
        folder = ensure_writable_dir(settings.output_dir)
        # 3. Model.
        from sdart.engine import Engine
        from sdart.run.progress import GenerationCancelled

        with err.status(f"loading {request.model or settings.model}…"):
            engine = Engine(request.model or settings.model, settings=settings)
        request = engine.resolve_request(request.replace(model=None))
        from sdart.cli.compile import prepare_compiled

        prepare_compiled(engine, request, debug=debug)  # always: build what this size lacks; auto: use what exists
        err.print(f"[dim]{escape(engine.reference)} · {engine.model.family} · {engine.device} · "
                  f"{str(engine.dtype).removeprefix('torch.')} · loaded in {engine.load_s:.1f} s · seed {request.seed}[/]")
        not_applied: list[str] = []
        if image is not None:
            from sdart.cli.from_image import not_applied as image_not_applied
            from sdart.images.infotext import parse_infotext

            written = parse_infotext(engine.infotext(request, request.seed)).params
            not_applied = image_not_applied(image, request.model_dump(), written, engine.settings.rng)
            not_applied += engine.prompt_loras(request).warnings  # the prompt's LoRA tags this folder lacks
            if not_applied:
                err.print(f"[yellow]not applied:[/] {escape(', '.join(not_applied))}", highlight=False, soft_wrap=True)
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
        _report(saved, timings, engine, request, cancelled, as_json, not_applied if image is not None else None)
        if cancelled:
            raise typer.Exit(EXIT_INTERRUPTED)


def _report(saved, timings, engine, request, cancelled: bool, as_json: bool, not_applied: list[str] | None) -> None:
    from sdart.run.result import summarise_timings

    summary = summarise_timings(timings, max(len(saved), 1), engine.load_s)
    if as_json:
        print(json.dumps({
            "model": engine.reference, "device": str(engine.device), "dtype": str(engine.dtype).removeprefix("torch."),
            "request": request.model_dump(), "images": saved, "timings": summary, "cancelled": cancelled,
            **({"not_applied": not_applied} if not_applied is not None else {}),
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
