"""The `sdart compile` command: build a model's compiled UNet and VAE decoder ahead, for the sizes asked."""

from __future__ import annotations

import re
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from sdart.cli import options as o
from sdart.cli.common import EXIT_FAILED, configure_logging, err, fail, friendly_errors, out


def parse_size(text: str) -> tuple[int, int]:
    """'512x768' (or 512×768, 512X768) → (512, 768): width × height, each a multiple of 8."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--size = {text!r}: write WIDTHxHEIGHT, e.g. 512x512")
    width, height = int(match[1]), int(match[2])
    if width < 64 or height < 64 or width % 8 or height % 8:
        raise ValueError(f"--size = {text!r}: width and height must be multiples of 8, at least 64")
    return width, height


def compile(
    model: Optional[str] = typer.Argument(None, help="Model to compile for \\[default: SDART_MODEL or the default model]."),
    size: Optional[list[str]] = typer.Option(None, "--size", help="Image size WIDTHxHEIGHT; repeat for more \\[default: the model's size]."),
    batch: int = typer.Option(1, "--batch", "-b", min=1, max=64, help="Images per batch (the UNet runs twice that with CFG)."),
    cfg: bool = typer.Option(True, "--cfg/--no-cfg", help="For guidance scale > 1 (the default), or ≤ 1 (LCM, Turbo: the UNet runs once per image)."),
    device: o.Device = None,
    dtype: o.DType = None,
    lora: o.Lora = None,
    vae: o.Vae = None,
    token_downsampling: o.TokenDownsampling = None,
    quantize: o.Quantize = None,
    debug: o.Debug = False,
) -> None:
    """Compile a model's UNet and VAE decoder once, for later runs of `generate`, `serve` and `batch` to load.

    Artifacts are kept under the cache folder (SDART_CACHE_DIR; `sdart cache list`) per model architecture, dtype,
    CPU or GPU kind, torch version, size and batch; a run whose size or batch has none runs eager.
    """
    configure_logging(debug)
    with friendly_errors(debug):
        from sdart.settings import load_settings
        from sdart.speed.builder import Shape

        shapes = [Shape(*parse_size(text), batch, cfg) for text in size] if size else [Shape(None, None, batch, cfg)]
        settings = load_settings(model=model, device=device, dtype=dtype, loras=lora, vae=vae,
                                 token_downsampling=token_downsampling, quantize=quantize)
        built, failed = build_with_progress(settings, shapes, debug=debug)
        for what in built:
            out.print(f"compiled {escape(what)}", highlight=False)
        if failed:
            raise typer.Exit(EXIT_FAILED)


def prepare_compiled(engine, request, *, debug: bool = False) -> None:
    """Before a run: compile = always builds what this request's size and batch lack, then loads it; auto only
    says how to get the compiled speed when a large model has no artifact for this size."""
    from sdart.speed.builder import AUTO_MIN_UNET_PARAMS, Shape, planned_builds

    compiled = engine.compiled
    if not compiled.dispatchers:
        return
    shape = Shape(request.width, request.height, request.batch_size, request.cfg_scale > 1)
    pipe = engine.model.pipeline
    missing = planned_builds(pipe, engine.model.family, engine.dtype, engine.device, engine.speed, compiled.store,
                             [shape])
    if not missing:
        return
    if compiled.mode == "always":
        build_with_progress(engine.settings.model_copy(update={"model": engine.reference}), [shape], debug=debug)
        compiled.refresh()
    elif pipe.unet.num_parameters() >= AUTO_MIN_UNET_PARAMS:
        cfg = "" if shape.cfg else " --no-cfg"
        err.print(f"[dim]running eager: `sdart compile {escape(engine.reference)} --size {request.width}x"
                  f"{request.height} --batch {request.batch_size}{cfg}` once makes each step faster[/]")


def build_with_progress(settings, shapes, *, debug: bool = False) -> tuple[list[str], list[str]]:
    """Build what `shapes` need in a child process, drawing one progress line (elapsed, and the time left by the
    last build of the same component); library output goes to the build log, or to the terminal with --debug."""
    from sdart.speed.builder import run_build

    built: list[str] = []
    failed: list[str] = []
    planned: list[list[str]] = []
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), EtaColumn()]
    with Progress(*columns, console=err, transient=True, disable=debug) as progress:
        task = progress.add_task(f"loading {escape(settings.model)} to compile", eta_s=None)

        def on_event(event: dict) -> None:
            kind = event["event"]
            if kind == "plan":
                planned.append(event["builds"])
                if not event["builds"]:
                    err.print("[dim]already compiled: nothing to build[/]")
            elif kind == "start":
                progress.reset(task, description=f"compiling {escape(event['what'])}", eta_s=event.get("eta_s"))
            elif kind == "built":
                built.append(event["what"])
                err.print(f"[green]compiled[/] {escape(event['what'])} in {_minutes(event['build_s'])}")
            elif kind in ("failed", "crashed"):
                failed.append(event.get("what", "the build"))
                err.print(f"[red]compile failed:[/] {escape(event.get('what', ''))} {escape(event['error'])}")

        _, log_path = run_build(settings, shapes, on_event=on_event, echo=debug)
    if failed:
        err.print(f"[yellow]the build log:[/] {escape(str(log_path))}; those sizes run eager")
    if not planned and not failed:
        raise fail(f"the build process stopped before planning (see {log_path})")
    return built, failed


class EtaColumn(ProgressColumn):
    """'about 1 min 20 s left', from the last build's duration; nothing when there was none."""

    def render(self, task) -> Text:
        eta = task.fields.get("eta_s")
        if not eta:
            return Text("")
        left = eta - (task.elapsed or 0)
        return Text(f"about {_minutes(left)} left" if left > 0 else "longer than the last build", "dim")


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
