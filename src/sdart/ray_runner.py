"""Scale-out on Ray: batch generation with Ray Data, and the HTTP server behind Ray Serve.

Ray is optional (`pip install 'sdart[ray]'`), so `ray` is imported only inside functions.

Batch (`sdart batch --ray …`): the driver plans and verifies exactly as the local runner does (`sdart.batch`);
only the executor changes. Tasks become a Ray Dataset; `map_batches` runs `ImageMaker`, a callable class that
builds one Engine per actor and keeps it, over an actor pool of `--workers`. Actors write `<key>.png` into
the output folder (a path every node sees) and return manifest records; the driver appends them as they stream
back, so resume and kill -9 behave as they do locally.

Serve (`serve_on_ray`, or `serve run` with `app_builder`): two deployments.
- `ModelReplica` (N replicas, each with its GPUs, autoscaling bounds): holds one Engine and streams each
  request's step progress and finished batches back to the caller.
- `SdartApi` (one replica): the unchanged FastAPI app of `sdart.server` (same native and A1111 routes, same
  SQLite job store), whose workers see `RemoteEngine`, an Engine look-alike that forwards generation to the
  model replicas. One worker per possible model replica keeps all replicas busy. The API is one replica
  because the job store is one SQLite file; generation, the expensive part, is what scales.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdart.batch import Executor, Task, generate_task
from sdart.output import png_bytes

if TYPE_CHECKING:
    from sdart.settings import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed; install it with: pip install 'sdart[ray]'"
SERVE_APP = "sdart"
MODEL_DEPLOYMENT = "ModelReplica"


class RayMissing(RuntimeError):
    """`--ray` was asked for but Ray is not installed."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


# --- connecting ----------------------------------------------------------------------------------------------


@contextmanager
def ray_session(address: str = "auto", **init_kwargs: Any) -> Iterator[Any]:
    """Connect to Ray for the duration of the block.

    `auto`: the cluster named by RAY_ADDRESS or started by `ray start`, else a new local one; `local`: a new
    local cluster; anything else: an address (`host:6379`, `ray://host:10001`). A session already open in this
    process (a notebook, the tests) is used as is and left open.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("log_to_driver", False)  # actor logs (model loading notes) would tear the progress bar
    if address == "local":
        ray.init(**init_kwargs)
    elif address == "auto":
        try:
            ray.init(address="auto", **init_kwargs)
        except ConnectionError:
            log.info("no running Ray cluster found; starting a local one")
            ray.init(**init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def default_gpus_per_worker() -> float:
    """1 when the cluster has GPUs, else 0: an actor asking for a GPU on a CPU-only cluster would wait forever."""
    ray = _import_ray()
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _portable_settings(settings: Settings, cpus: float | None) -> dict[str, Any]:
    """Settings as plain data for another process, with local paths made absolute (Ray workers run in their
    own working directory) and torch threads matched to the CPUs Ray gives the actor."""
    data = settings.model_dump(mode="json")
    model = Path(settings.model).expanduser()
    if model.exists():
        data["model"] = str(model.resolve())
    for name in ("model_config_dir", "data_dir", "output_dir", "compile_cache_dir"):
        if data.get(name):
            data[name] = str(Path(data[name]).expanduser().resolve())
    if data.get("threads") is None and cpus and cpus >= 1:
        data["threads"] = int(cpus)
    return data


def _engine(settings_data: dict[str, Any]):
    from sdart.engine import Engine
    from sdart.settings import Settings

    settings = Settings(**settings_data)
    return Engine(settings.model, settings=settings)


# --- batch: Ray Data -----------------------------------------------------------------------------------------


class ImageMaker:
    """Ray Data callable class: one Engine per actor, built once, used for every batch of tasks it gets."""

    def __init__(self, settings_data: dict[str, Any], folder: str, retries: int):
        self.engine = _engine(settings_data)
        self.folder = Path(folder)
        self.retries = retries

    def __call__(self, rows: dict[str, Any]) -> dict[str, list[str]]:
        records = [generate_task(self.engine, Task.from_json(text), self.folder, retries=self.retries)
                   for text in rows["task"]]
        return {"record": [json.dumps(record) for record in records]}


def ray_executor(settings: Settings, folder: Path, *, workers: int = 1, gpus_per_worker: float | None = None,
                 cpus_per_worker: float | None = None, retries: int = 0) -> Executor:
    """An executor for `sdart.batch.run_batch` that runs tasks on an actor pool (call inside `ray_session`)."""

    def execute(tasks: list[Task]) -> Iterator[dict[str, Any]]:
        if not tasks:
            return
        ray = _import_ray()
        gpus = default_gpus_per_worker() if gpus_per_worker is None else gpus_per_worker
        cpus = 1.0 if cpus_per_worker is None else cpus_per_worker
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws one overall bar
        # One task per block and per call: a finished image is recorded as soon as it exists, and an idle
        # actor can take the next image (a block of many would be stuck behind one actor).
        rows = [{"task": task.to_json()} for task in tasks]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = dataset.map_batches(
            ImageMaker,
            fn_constructor_kwargs={"settings_data": _portable_settings(settings, cpus),
                                   "folder": str(Path(folder).resolve()), "retries": retries},
            batch_size=1,
            # One image in flight per actor: queuing more on a busy actor would starve one that just started.
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        for row in results.iter_rows():
            yield json.loads(row["record"])

    return execute


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
        from sdart.engine import GenerationCancelled
        from sdart.request import GenerationRequest

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

    @property
    def reference(self) -> str:
        return self.model.spec.reference

    def resolve_request(self, request):
        from sdart.engine import Engine

        return Engine.resolve_request(self, request)  # type: ignore[arg-type] - it reads only self.model

    def load(self, reference: str) -> None:
        from sdart.models import ModelLoadError

        raise ModelLoadError("unsupported", f"model = {reference!r}: under Ray Serve every replica keeps the model it "
                                            "was deployed with; pass `model` in each request instead")

    def iter_batches(self, request, *, on_step=None, cancel=None):
        from PIL import Image

        from sdart.engine import Batch, GenerationCancelled, StepProgress, _cancel_check

        is_cancelled = _cancel_check(cancel)
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
    """For `serve run sdart.ray_runner:app_builder replicas=2 model=…` or a Serve config file's import_path.

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
