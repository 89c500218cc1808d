"""The HTTP server behind Ray Serve (`serve_on_ray`, or `serve run` with `app_builder`): two deployments.
- `ModelReplica` (N replicas, each with its GPUs, autoscaling bounds): holds one Engine and streams each
  request's step progress and finished batches back to the caller.
- `SdartApi` (one replica): the unchanged FastAPI app of `sdart.server` (same native and A1111 routes, same
  SQLite job store), whose workers see `RemoteEngine`, an Engine look-alike that forwards generation to the
  model replicas. One worker per possible model replica keeps all replicas busy. The API is one replica
  because the job store is one SQLite file; generation, the expensive part, is what scales.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdart.cluster import MODEL_DEPLOYMENT, SERVE_APP, _engine, _portable_settings, default_gpus_per_worker, ray_session
from sdart.images.output import png_bytes
from sdart.models.lorafiles import LoraFolder

if TYPE_CHECKING:
    from sdart.settings import Settings


# --- serve: the model deployment -----------------------------------------------------------------------------


class ModelReplicaImpl:
    """One Engine in a Serve replica. `stream` yields ("step", …) and ("batch", …) events for one request."""

    def __init__(self, settings_data: dict[str, Any]):
        self.engine = _engine(settings_data)

    def describe(self) -> dict[str, Any]:
        model = self.engine.model
        return {"reference": self.engine.reference, "name": model.spec.name, "hash": model.hash,
                "native_size": model.native_size, "family": model.family, "device": str(self.engine.device),
                "dtype": str(self.engine.dtype).removeprefix("torch."), "load_s": self.engine.load_s}

    def stream(self, request_fields: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from sdart.request import GenerationRequest
        from sdart.run.progress import GenerationCancelled

        request = GenerationRequest.parse(request_fields)
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()

        # The Engine's generator runs in a thread so that step events reach the caller while a batch is still
        # being denoised; the caller going away (generator closed) sets `cancel`, which stops it at the next step.
        def work() -> None:
            try:
                for batch in self.engine.iter_batches(request, on_step=lambda p: events.put(("step", p)),
                                                      cancel=cancel):
                    events.put(("batch", batch))
            except GenerationCancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                events.put(("error", exc))
            events.put(("end", None))

        threading.Thread(target=work, name="sdart-replica-generate", daemon=True).start()
        try:
            while True:
                kind, item = events.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                if kind == "step":
                    yield {"kind": "step", **item.__dict__}
                else:
                    yield {"kind": "batch", "iteration": item.iteration, "seeds": item.seeds,
                           "infotexts": item.infotexts, "nsfw": item.nsfw, "timings": item.timings,
                           "images": [png_bytes(image) for image in item.images]}
        finally:
            cancel.set()


# --- serve: the API deployment's view of the model replicas --------------------------------------------------


@dataclass(frozen=True)
class _RemoteSpec:
    reference: str
    name: str


@dataclass(frozen=True)
class _RemoteModel:
    spec: _RemoteSpec
    hash: str | None
    native_size: int
    family: str


class RemoteEngine:
    """What the server's Worker needs of an Engine, with generation done by `ModelReplica` replicas.

    Thread-safe: each server worker thread streams its own job from whichever replica Serve picks.
    """

    def __init__(self, handle, settings: Settings, info: dict[str, Any]):
        self._handle = handle
        self.settings = settings
        self.model = _RemoteModel(_RemoteSpec(info["reference"], info["name"]), info["hash"], info["native_size"],
                                  info["family"])
        self.device, self.dtype, self.load_s = info["device"], info["dtype"], info["load_s"]
        self.safety_checker = settings.safety_checker
        self.lora_folder = LoraFolder(settings.lora_dir)  # the replicas read the same folder (a shared path)

    @property
    def reference(self) -> str:
        return self.model.spec.reference

    def resolve_request(self, request):
        from sdart.engine import Engine

        return Engine.resolve_request(self, request)  # type: ignore[arg-type] - it reads only self.model

    def prompt_loras(self, request):
        """The request's LoRA tags looked up here (the replica checks again whether its settings can apply them)."""
        from sdart.run.loras import lookup_request_loras

        return lookup_request_loras(request, self.lora_folder)

    def load(self, reference: str) -> None:
        from sdart.models.errors import ModelLoadError

        raise ModelLoadError("unsupported", f"model = {reference!r}: under Ray Serve every replica keeps the model it "
                                            "was deployed with; pass `model` in each request instead")

    def iter_batches(self, request, *, on_step=None, cancel=None, finish_batch=None):
        """The engine's iter_batches, on a replica. `finish_batch` (A1111's interrupt and skip keeping the picture
        so far) does not reach a replica mid-step: interrupt stops as a cancel does, skip changes nothing."""
        from PIL import Image

        from sdart.run.progress import GenerationCancelled, StepProgress, cancel_check
        from sdart.run.result import Batch

        is_cancelled = cancel_check(cancel)
        # A replica may have loaded another model for an earlier request: name ours explicitly.
        fields = request.replace(model=request.model or self.reference).model_dump()
        response = self._handle.options(stream=True).stream.remote(fields)
        try:
            for event in response:
                kind = event.pop("kind")
                if kind == "step" and on_step is not None:
                    on_step(StepProgress(**event))
                elif kind == "batch":
                    images = [Image.open(io.BytesIO(data)) for data in event.pop("images")]
                    for image in images:
                        image.load()
                    yield Batch(images=images, **event)
                if is_cancelled():
                    raise GenerationCancelled()
        finally:
            response.cancel()  # the replica stops at its next step (no-op when the stream has ended)


class WorkerPool:
    """Several server Workers on one job store, seen by the routes as the one `server.worker`.

    Each Worker runs one job at a time; with one per model replica, every replica can be busy.
    """

    def __init__(self, workers: list):
        self.workers = workers

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        for worker in self.workers:
            worker.stop(timeout)

    def notify(self) -> None:
        for worker in self.workers:
            worker.notify()

    def cancel(self, job_id: str) -> None:
        # Whichever worker holds (or is about to start) the job applies it; for the others it is an unused note.
        for worker in self.workers:
            worker.cancel(job_id)

    def cancel_running(self) -> str | None:
        ids = [worker.cancel_running() for worker in self.workers]
        return next((job_id for job_id in ids if job_id), None)

    def running_job_id(self) -> str | None:
        return next((job_id for w in self.workers if (job_id := w.running_job_id())), None)

    def alive(self) -> bool:
        return all(worker.alive() for worker in self.workers)

    def with_engine(self, action):
        with ExitStack() as stack:  # between jobs on every worker (RemoteEngine.load refuses anyway)
            for worker in self.workers:
                stack.enter_context(worker.engine_lock)
            return action(self.workers[0].engine)


def build_api(settings: Settings, engine: RemoteEngine, workers: int):
    """The server's FastAPI app on a RemoteEngine, with `workers` job workers sharing its store."""
    from sdart.server.app import create_app
    from sdart.server.worker import Worker

    app = create_app(settings, engine)
    server = app.state.server
    extra = [Worker(engine, server.store, server.hub, server.images_dir) for _ in range(max(workers, 1) - 1)]
    server.worker = WorkerPool([server.worker, *extra])  # the app's lifespan starts and stops server.worker
    return app


class SdartApiImpl:
    """The API replica: builds the server's app once the model deployment has said what it holds."""

    async def __init__(self, settings_data: dict[str, Any], model_handle, workers: int):
        from sdart.settings import Settings

        self.settings = Settings(**settings_data)
        self.model_handle = model_handle
        self.workers = workers
        # Awaited here: a blocking .result() is refused inside the replica's event loop.
        self.model_info = await model_handle.describe.remote()

    def __serve_build_asgi_app__(self):
        engine = RemoteEngine(self.model_handle, self.settings, self.model_info)
        return build_api(self.settings, engine, self.workers)


@dataclass(frozen=True)
class ServeScale:
    """How the model deployment scales: a fixed `replicas`, or autoscaling between min and max."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    gpus_per_replica: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0
    target_ongoing_requests: float = 1.0  # one generation at a time keeps a replica's device busy

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @property
    def most(self) -> int:
        return max(self.max_replicas or 0, self.min_replicas or 0, 1) if self.autoscaling else self.replicas


def build_serve_app(settings: Settings, scale: ServeScale):
    """The Serve application: API ingress bound to the model deployment (call with a Ray session open)."""
    from ray import serve

    gpus = default_gpus_per_worker() if scale.gpus_per_replica is None else scale.gpus_per_replica
    model_options: dict[str, Any] = {
        "name": MODEL_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": scale.cpus_per_replica, "num_gpus": gpus},
        "max_ongoing_requests": 1,  # the Engine runs one generation at a time; others wait in Serve's queue
    }
    if scale.autoscaling:
        model_options["autoscaling_config"] = {"min_replicas": scale.min_replicas or 1,
                                               "max_replicas": scale.most,
                                               "target_ongoing_requests": scale.target_ongoing_requests}
    else:
        model_options["num_replicas"] = scale.replicas
    model = serve.deployment(**model_options)(ModelReplicaImpl)
    api = serve.deployment(name="SdartApi", num_replicas=1, ray_actor_options={"num_cpus": 0})(
        serve.ingress()(SdartApiImpl))
    portable = _portable_settings(settings, scale.cpus_per_replica)
    return api.bind(portable, model.bind(portable), scale.most)


def start_serve(settings: Settings, scale: ServeScale, *, blocking: bool = False) -> str:
    """Deploy on the Ray session open in this process, listening on settings.host:port; returns the base URL."""
    from ray import serve

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_serve_app(settings, scale), name=SERVE_APP, route_prefix="/", blocking=blocking)
    return f"http://{settings.host}:{settings.port}"


def app_builder(args: dict[str, Any]):
    """For `serve run sdart.server.ray:app_builder replicas=2 model=…` or a Serve config file's import_path.

    `args` are Settings fields (model, device, data_dir, …) plus replicas, min_replicas, max_replicas,
    gpus_per_replica, cpus_per_replica.
    """
    from sdart.settings import load_settings

    settings_fields, scale = parse_builder_args(args)
    return build_serve_app(load_settings(**settings_fields), scale)


def parse_builder_args(args: dict[str, Any]) -> tuple[dict[str, Any], ServeScale]:
    """Split `serve run` args (all strings from the command line, typed from a config file) into Settings
    fields and a ServeScale."""
    settings_fields = dict(args)
    scale: dict[str, Any] = {}
    for name, spec in ServeScale.__dataclass_fields__.items():
        if name in settings_fields:
            value = settings_fields.pop(name)
            kind = float if "float" in str(spec.type) else int
            try:
                scale[name] = None if value in (None, "", "auto") else kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} = {value!r}: must be a number") from None
    return settings_fields, ServeScale(**scale)


def serve_on_ray(settings: Settings, scale: ServeScale, *, address: str = "auto", on_ready=None) -> None:
    """`sdart serve --ray`: deploy on a cluster, call `on_ready(url)`, and block until Ctrl-C, then take the
    application down. The same bind rule as `sdart serve` applies (a non-loopback host needs an API key)."""
    import time

    from sdart.server.security import check_bind

    check_bind(settings.host, settings.api_key)
    with ray_session(address):
        from ray import serve

        url = start_serve(settings, scale)
        if on_ready is not None:
            on_ready(url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            serve.delete(SERVE_APP)
