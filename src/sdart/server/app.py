"""The FastAPI application: wires the store, the worker, both APIs, the web page and the guards together.

Layout of the data folder:
    data_dir/jobs.sqlite3   the job store (WAL: -wal and -shm files beside it)
    data_dir/images/        PNGs, named by sdart.output; clients reach them only through image ids
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from sdart.engine import Engine
from sdart.images.output import ensure_writable_dir
from sdart.server import a1111, a1111_extras, a1111_networks, errors, history, model_switch, native, pnginfo, stream
from sdart.server.admission import Server
from sdart.server.catalog import ModelCatalog
from sdart.server.events import EventHub
from sdart.server.security import ApiKeyAuth, BodyLimit
from sdart.server.store import JobStore
from sdart.server.worker import Worker
from sdart.settings import Settings
from sdart.version import __version__

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def open_server(settings: Settings, engine: Engine) -> Server:
    """Open the store, put jobs a dead process left running back in the queue, and build the worker."""
    data_dir = ensure_writable_dir(settings.data_dir)
    images_dir = ensure_writable_dir(data_dir / "images")
    inputs_dir = ensure_writable_dir(data_dir / "inputs")
    store = JobStore(data_dir / "jobs.sqlite3")
    recovered = store.recover()
    if recovered:
        log.warning("%d job(s) were running when the server last stopped; they run again first", recovered)
    _remove_unrecorded_images(images_dir, store)
    hub = EventHub()
    worker = Worker(engine, store, hub, images_dir)
    return Server(settings, engine, store, hub, worker, ModelCatalog(engine, settings.extra_models), images_dir,
                  inputs_dir)


def _remove_unrecorded_images(images_dir: Path, store: JobStore) -> None:
    """A crash between writing a PNG and recording it leaves a file no job owns; its job makes it again."""
    recorded = store.image_filenames()
    for path in images_dir.glob("*.png"):
        if path.name not in recorded:
            path.unlink(missing_ok=True)


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    server = open_server(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from sdart.speed.builder import start_background_compile

        server.worker.start()
        compiling = start_background_compile(engine)  # missing compiled artifacts; jobs run eager until ready
        try:
            yield
        finally:
            if compiling is not None:
                compiling.stop()
            server.worker.stop()
            server.store.close()

    app = FastAPI(title="sdart", version=__version__, lifespan=lifespan,
                  description="Stable Diffusion jobs: a native API with job ids and live events, and an "
                              "A1111-compatible API under /sdapi/v1, both served by one queue.")
    app.state.server = server
    errors.install(app)
    for routes in (native, history, stream, model_switch, pnginfo):
        app.include_router(routes.router)
    app.include_router(a1111.router)
    app.include_router(a1111_extras.router)
    app.include_router(a1111_networks.router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Middleware added last runs first: CORS (so that preflights are answered and refusals carry CORS
    # headers), then the body cap, then auth.
    if settings.api_key:
        app.add_middleware(ApiKeyAuth, api_key=settings.api_key)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
