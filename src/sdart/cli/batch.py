"""`sdart batch`: prompt files → images, resumable, locally or on a Ray cluster.

Kept out of cli.py so that file stays one concern per command group; registered there with one line. Heavy
imports (torch, diffusers, ray) happen inside the command, so `sdart --help` stays fast.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from sdart.cli import options as o


def _hires_upscaler_here(folder):
    """The plan's per-line check: a hires fix naming an upscaler model the upscalers folder lacks makes a bad line,
    named before anything runs (as a missing init_image is), not images that fail one by one. One lookup per name."""
    from functools import cache

    from sdart.request import RequestError
    from sdart.run.upscale import hires_upscaler_problem

    problem = cache(lambda name: hires_upscaler_problem(name, folder))

    def check(request) -> None:
        if request.enable_hr and (message := problem(request.hr_upscaler)):
            raise RequestError([("hr_upscaler", request.hr_upscaler, message)])

    return check


def batch(
    prompt_files: list[Path] = typer.Argument(..., help=".txt (one prompt a line, # comments), .jsonl (request objects) or .csv (header of field names)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: PNGs named by key, and manifest.jsonl. Run again to resume."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds each line starts from, e.g. 0-3 or 1,5,9 (a line's seed/seeds win)."),
    negative_prompt: o.NegativePrompt = None,
    steps: o.Steps = None,
    cfg_scale: o.CfgScale = None,
    seed: Optional[int] = typer.Option(None, "--seed", help="Default seed (-1: a seed derived from the line, stable across runs)."),
    width: o.Width = None,
    height: o.Height = None,
    n_iter: Optional[int] = typer.Option(None, "--n-iter", "-n", help="Images per seed and line (consecutive seeds)."),
    sampler_name: o.Sampler = None,
    scheduler: o.Scheduler = None,
    clip_skip: o.ClipSkip = None,
    emphasis: o.Emphasis = None,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model (a line's `model` wins) \\[env: SDART_MODEL]."),
    retries: int = typer.Option(1, "--retries", min=0, help="Extra tries for an image that fails."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on Ray: auto (RAY_ADDRESS or a running `ray start` cluster, else a local one), local, or an address."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray actors, each holding one model."),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", min=0, help="GPUs per Ray actor \\[default: 1 if the cluster has GPUs, else 0]."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", min=0, help="CPUs per Ray actor \\[default: 1]."),
    model_config_dir: o.ModelConfigDir = None,
    device: o.Device = None,
    dtype: o.DType = None,
    memory: o.Memory = None,
    lora: o.Lora = None,
    lora_dir: o.LoraDir = None,
    vae: o.Vae = None,
    embeddings_dir: o.EmbeddingsDir = None,
    upscaler_dir: o.UpscalerDir = None,
    compile: o.Compile = None,
    step_cache: o.StepCache = None,
    token_downsampling: o.TokenDownsampling = None,
    quantize: o.Quantize = None,
    rng: o.Rng = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the files and count the work; generate nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    debug: o.Debug = False,
) -> None:
    """Generate every image asked for in prompt files; run it again to resume (done images are skipped).

    Request options (--steps, --cfg, --sampler, …) are defaults: a line's own fields win.
    """
    from sdart.cli.common import (
        EXIT_BAD_INPUT,
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        configure_logging,
        err,
        fail,
        friendly_errors,
    )

    configure_logging(debug)
    with friendly_errors(debug):
        from sdart.batch.manifest import BatchDir, BatchDirBusy
        from sdart.batch.plan import parse_seeds, plan_batch
        from sdart.batch.run import run_batch
        from sdart.settings import load_settings

        # 1. Settings and command-line defaults, then the plan: one task per image, bad lines set aside.
        if seed is not None and seeds is not None:
            raise ValueError("--seed and --seeds: give one (--seeds 0-3 makes one run per seed)")
        settings = load_settings(model=model, model_config_dir=model_config_dir, device=device, dtype=dtype,
                                 memory=memory, rng=rng, loras=lora, lora_dir=lora_dir, vae=vae,
                                 embeddings_dir=embeddings_dir, upscaler_dir=upscaler_dir, compile=compile,
                                 step_cache=step_cache, token_downsampling=token_downsampling, quantize=quantize)
        defaults = {k: v for k, v in dict(
            negative_prompt=negative_prompt, steps=steps, cfg_scale=cfg_scale, seed=seed, width=width, height=height,
            n_iter=n_iter, sampler_name=sampler_name, scheduler=scheduler, clip_skip=clip_skip,
            emphasis=emphasis).items() if v is not None}
        try:
            seed_list = parse_seeds(seeds) if seeds is not None else None
        except ValueError as exc:
            raise ValueError(f"--seeds = {seeds!r}: {exc}") from None
        plan = plan_batch(prompt_files, defaults, model=settings.model, seeds=seed_list,
                          check=_hires_upscaler_here(settings.upscaler_dir))
        from rich.markup import escape  # prompts may hold [brackets]

        for error in plan.errors:
            err.print(f"[red]bad line[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        if not plan.tasks and not plan.errors:
            raise fail("the prompt files hold no prompts", EXIT_BAD_INPUT)

        # 2. The output folder (locked: one run at a time), then the executor: local Engine or Ray actors.
        try:
            batch_dir = BatchDir(out)
        except BatchDirBusy as exc:
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        with batch_dir, _executor(ray, settings, batch_dir.folder, retries, workers, gpus_per_worker,
                                  cpus_per_worker, dry_run) as execute, _progress() as (on_start, on_record):
            try:
                summary = run_batch(plan, batch_dir, execute, on_start=on_start, on_record=on_record)
            except KeyboardInterrupt:
                err.print("[yellow]interrupted:[/] finished images are recorded; run the same command to resume")
                raise typer.Exit(EXIT_INTERRUPTED) from None
        _report(summary, plan, batch_dir.folder, as_json, dry_run)
        if not summary.ok:
            raise typer.Exit(EXIT_FAILED)


@contextmanager
def _executor(ray: str | None, settings, folder: Path, retries: int, workers: int, gpus_per_worker: float | None,
              cpus_per_worker: float | None, dry_run: bool):
    from sdart.batch.run import local_executor

    if dry_run:
        yield lambda tasks: iter(())
        return
    if ray is None:
        if workers != 1 or gpus_per_worker is not None or cpus_per_worker is not None:
            raise ValueError("--workers, --gpus-per-worker and --cpus-per-worker need --ray")
        yield local_executor(lambda: _load_engine(settings), folder, retries=retries)
        return
    from sdart.batch.ray import ray_executor
    from sdart.cli.common import EXIT_BAD_INPUT, fail
    from sdart.cluster import RayMissing, ray_session

    with ExitStack() as stack:
        try:
            stack.enter_context(ray_session(ray))
        except RayMissing as exc:
            raise fail(str(exc), EXIT_BAD_INPUT) from None  # fail() escapes the [ray] in the hint
        yield ray_executor(settings, folder, workers=workers, gpus_per_worker=gpus_per_worker,
                           cpus_per_worker=cpus_per_worker, retries=retries)


def _load_engine(settings):
    from sdart.cli.common import err
    from sdart.engine import Engine

    with err.status(f"loading {settings.model}…"):
        engine = Engine(settings.model, settings=settings)
    err.print(f"[dim]{engine.reference} · {engine.model.family} · {engine.device} · "
              f"{str(engine.dtype).removeprefix('torch.')} · loaded in {engine.load_s:.1f} s[/]")
    return engine


@contextmanager
def _progress():
    """An overall bar: images finished of those to do, with counts and an ETA (from rich's rate estimate)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sdart.cli.common import err

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True) as progress:
        task_id = progress.add_task("batch", total=None, counts="")

        def on_start(todo, summary) -> None:
            if summary.skipped:
                err.print(f"[dim]{summary.skipped} image(s) already done, {len(todo)} to make[/]")
            progress.update(task_id, total=len(todo))

        def on_record(record: dict[str, Any], summary) -> None:
            if record["status"] != "done":
                from rich.markup import escape

                err.print(f"[red]failed[/] {record['source']} seed {record['seed']}: {escape(record['error'] or '')}",
                          highlight=False, soft_wrap=True)
            rate = f" · {summary.images_per_s:.2f} img/s" if summary.done else ""
            progress.update(task_id, advance=1, counts=f"done {summary.done} · failed {summary.failed}{rate}")

        yield on_start, on_record


def _report(summary, plan, folder: Path, as_json: bool, dry_run: bool) -> None:
    import json

    from sdart.cli.common import err

    if as_json:
        print(json.dumps({**summary.as_dict(), "planned": len(plan.tasks), "duplicates": plan.duplicates,
                          "dry_run": dry_run, "out": str(folder)}, indent=2))
        return
    if dry_run:
        err.print(f"{len(plan.tasks)} image(s) from {plan.lines} line(s); {summary.skipped} already done; "
                  f"{len(plan.tasks) - summary.skipped} to make; {summary.invalid} bad line(s)", highlight=False)
        return
    colour = "green" if summary.ok else "red"
    err.print(f"[{colour}]done {summary.done} · skipped {summary.skipped} · failed {summary.failed} · "
              f"bad lines {summary.invalid}[/] · {summary.elapsed_s:.1f} s · {summary.images_per_s:.2f} images/s "
              f"→ {folder}", highlight=False)
