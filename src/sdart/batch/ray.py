"""Batch on Ray Data: the driver plans and verifies exactly as the local runner does (`sdart.batch`); only the
executor changes. Tasks become a Ray Dataset; `map_batches` runs `ImageMaker`, a callable class that builds one
Engine per actor and keeps it, over an actor pool of `--workers`. Actors write `<key>.png` into the output folder
(a path every node sees) and return manifest records; the driver appends them as they stream back, so resume
and kill -9 behave as they do locally."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdart.batch.plan import Task
from sdart.batch.run import Executor, generate_task
from sdart.cluster import _engine, _import_ray, _portable_settings, default_gpus_per_worker

if TYPE_CHECKING:
    from sdart.settings import Settings


ACTOR_START_TIMEOUT_S = 600  # model loads included

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
        # The pool starts work once all its actors have loaded the model, so the first images are spread over
        # them (else the first one ready takes every image until the others are), and a cluster that can't hold
        # `workers` actors is said, not waited on forever.
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
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
        try:
            for row in results.iter_rows():
                yield json.loads(row["record"])
        except ray.exceptions.GetTimeoutError as exc:  # Ray's own text stays on __cause__
            raise RuntimeError(f"Ray did not start {workers} worker(s) within {ACTOR_START_TIMEOUT_S} s: the cluster "
                               f"lacks the resources for --workers {workers} × {cpus:g} CPU and {gpus:g} GPU "
                               "(--cpus-per-worker, --gpus-per-worker), or each worker's model load (a first "
                               "download) took longer") from exc

    return execute


