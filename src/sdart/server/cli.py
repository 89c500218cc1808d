"""The `sdart serve` command (registered in sdart.cli); heavy imports happen inside, so `sdart --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to load \\[env: SDART_MODEL]."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on \\[default: 127.0.0.1]; any other "
                                                            "address needs --api-key \\[env: SDART_HOST]."),
    port: Optional[int] = typer.Option(None, "--port", help="Port \\[default: 7860] \\[env: SDART_PORT]."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Job database and images \\[default: sdart-data] "
                                                                     "[env: SDART_DATA_DIR]."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require `Authorization: Bearer KEY` (or HTTP "
                                                                  "Basic with KEY as password) \\[env: SDART_API_KEY]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps \\[default: auto]."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, float16 or bfloat16 \\[default: auto]."),
    memory: Optional[str] = typer.Option(None, "--memory", help="balanced, low or minimal \\[default: balanced]."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Serve the web page, the native API (/api/v1, docs at /docs) and the A1111 API (/sdapi/v1)."""
    from sdart.cli import EXIT_BAD_INPUT, _configure_logging, err, fail, friendly_errors

    _configure_logging(debug)
    with friendly_errors(debug):
        import logging

        import uvicorn

        from sdart.engine import Engine
        from sdart.server.app import create_app
        from sdart.server.security import UnsafeBind, check_bind
        from sdart.settings import load_settings

        settings = load_settings(model=model, host=host, port=port, data_dir=data_dir, api_key=api_key,
                                 device=device, dtype=dtype, memory=memory)
        try:
            check_bind(settings.host, settings.api_key)
        except UnsafeBind as exc:
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        logging.getLogger("sdart").setLevel(log_level.upper())
        with err.status(f"loading {settings.model}…"):
            engine = Engine(settings.model, settings=settings)
        app = create_app(settings, engine)
        err.print(f"[green]sdart[/] serving {engine.reference} on http://{settings.host}:{settings.port}/ "
                  f"(API docs: /docs; data: {settings.data_dir})", highlight=False)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=debug)
