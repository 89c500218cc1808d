"""The `sdart serve` command: settings from the flags, then the HTTP server (or the server on Ray Serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sdart.cli import options as o

SHUTDOWN_GRACE_S = 5  # seconds a stopping server waits for open responses (event streams) before closing them


def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to load \\[env: SDART_MODEL]."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on \\[default: 127.0.0.1]; any other "
                                                            "address needs --api-key \\[env: SDART_HOST]."),
    port: Optional[int] = typer.Option(None, "--port", help="Port \\[default: 7860] \\[env: SDART_PORT]."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Job database and images \\[default: sdart-data] "
                                                                     "\\[env: SDART_DATA_DIR]."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require `Authorization: Bearer KEY` (or HTTP "
                                                                  "Basic with KEY as password) \\[env: SDART_API_KEY]."),
    device: o.Device = None,
    dtype: o.DType = None,
    memory: o.Memory = None,
    lora: o.Lora = None,
    lora_dir: o.LoraDir = None,
    vae: o.Vae = None,
    embeddings_dir: o.EmbeddingsDir = None,
    compile: o.Compile = None,
    step_cache: o.StepCache = None,
    token_downsampling: o.TokenDownsampling = None,
    quantize: o.Quantize = None,
    upscaler_dir: o.UpscalerDir = None,
    ray: Optional[str] = typer.Option(None, "--ray", help="Serve generation from a Ray cluster through Ray Serve: "
                                                          "auto, local, or a cluster ADDRESS (needs sdart\\[ray])."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="With --ray: model replicas (fixed count)."),
    min_replicas: Optional[int] = typer.Option(None, "--min-replicas", min=0, help="With --ray: autoscaling lower bound."),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", min=1, help="With --ray: autoscaling upper bound."),
    gpus_per_replica: Optional[float] = typer.Option(None, "--gpus-per-replica", min=0,
                                                     help="With --ray: GPUs per model replica \\[default: 1 when "
                                                          "the cluster has GPUs, else 0]."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    debug: o.Debug = False,
) -> None:
    """Serve the web page, the native API (/api/v1, docs at /docs) and the A1111 API (/sdapi/v1)."""
    from sdart.cli.common import EXIT_BAD_INPUT, configure_logging, err, fail, friendly_errors

    configure_logging(debug)
    with friendly_errors(debug):
        import logging

        import uvicorn

        from sdart.engine import Engine
        from sdart.server.app import create_app
        from sdart.server.security import UnsafeBind, check_bind
        from sdart.settings import load_settings

        settings = load_settings(model=model, host=host, port=port, data_dir=data_dir, api_key=api_key,
                                 device=device, dtype=dtype, memory=memory, loras=lora, lora_dir=lora_dir, vae=vae, compile=compile,
                                 step_cache=step_cache, token_downsampling=token_downsampling, quantize=quantize,
                                 upscaler_dir=upscaler_dir, embeddings_dir=embeddings_dir)
        try:
            check_bind(settings.host, settings.api_key)
        except UnsafeBind as exc:
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        logging.getLogger("sdart").setLevel(log_level.upper())
        if ray is not None:
            from sdart.cluster import RayMissing
            from sdart.server.ray import ServeScale, serve_on_ray

            scale = ServeScale(replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                               gpus_per_replica=gpus_per_replica)
            try:
                serve_on_ray(settings, scale, address=ray, on_ready=lambda url: err.print(
                    f"[green]sdart[/] serving {settings.model} from Ray Serve on {url}/ (Ctrl-C to stop)",
                    highlight=False))
            except RayMissing as exc:
                raise fail(str(exc), EXIT_BAD_INPUT) from None
            return
        with err.status(f"loading {settings.model}…"):
            engine = Engine(settings.model, settings=settings)
        app = create_app(settings, engine)
        err.print(f"[green]sdart[/] serving {engine.reference} on http://{settings.host}:{settings.port}/ "
                  f"(API docs: /docs; data: {settings.data_dir})", highlight=False)
        # Event streams never end by themselves (a page follows the server's stream for as long as it is open):
        # without a grace limit, one open page would keep a stopping server waiting forever.
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=debug,
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
