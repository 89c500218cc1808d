"""Running batch tasks: one task → one PNG and one manifest record; the driver loop and the local executor."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdart.batch.manifest import BatchDir
from sdart.batch.plan import Plan, Task

if TYPE_CHECKING:  # the Engine pulls in torch and diffusers; planning and resuming must not
    from sdart.engine import Engine


# --- 3. Running tasks ----------------------------------------------------------------------------------------


def generate_task(engine: Engine, task: Task, folder: Path, *, retries: int = 0) -> dict[str, Any]:
    """Make one task's image with `engine`, write `<key>.png`, and return its manifest record.

    Used by the local runner and by each Ray actor. Errors become a failed record (after `retries` more tries)
    rather than an exception, so one bad image never stops the batch.
    """
    from sdart.images.output import save_image_as

    request = task.request
    if request.model == engine.settings.model or request.model == engine.reference:
        request = request.replace(model=None)  # the loaded model: no reload, even if its reference was normalised
    error = None
    attempt = 0
    for attempt in range(1, retries + 2):
        started = time.perf_counter()
        try:
            result = engine.generate(request, progress=False)
            if not result.images:
                raise RuntimeError("the engine returned no image")
            save_image_as(result.images[0], result.infotexts[0], folder / task.file)
        except Exception as exc:  # noqa: BLE001 - any failure of one image is recorded, the batch goes on
            error = f"{type(exc).__name__}: {exc}"
            continue
        timings = {"total_s": round(time.perf_counter() - started, 4), **result.timings}
        return _record(task, "done", attempt, infotext=result.infotexts[0], timings=timings)
    return _record(task, "failed", attempt, error=error)


def _record(task: Task, status: str, attempts: int, *, infotext: str | None = None, error: str | None = None,
            timings: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "key": task.key,
        "status": status,
        "file": task.file if status == "done" else None,
        "source": task.source,
        "seed": task.request.seed,
        "request": task.request.model_dump(),
        "infotext": infotext,
        "error": error,
        "attempts": attempts,
        "timings": timings or {},
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class Summary:
    done: int = 0  # made in this run
    skipped: int = 0  # already done and verified on disk
    failed: int = 0  # images that failed after their retries
    invalid: int = 0  # prompt-file lines that could not be read
    elapsed_s: float = 0.0
    first_s: float | None = None  # seconds until the first image was recorded (model load included)
    last_s: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def steady_images_per_s(self) -> float | None:
        """Images/s after the first image, i.e. without start-up and model loading."""
        if self.done < 2 or self.first_s is None or self.last_s is None or self.last_s <= self.first_s:
            return None
        return (self.done - 1) / (self.last_s - self.first_s)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.invalid == 0

    def as_dict(self) -> dict[str, Any]:
        steady = self.steady_images_per_s
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "invalid_lines": self.invalid,
                "elapsed_s": round(self.elapsed_s, 3), "images_per_s": round(self.images_per_s, 4),
                "steady_images_per_s": None if steady is None else round(steady, 4), "ok": self.ok}


Executor = Callable[[list[Task]], Iterable[dict[str, Any]]]


def run_batch(plan: Plan, batch_dir: BatchDir, execute: Executor, *,
              on_start: Callable[[list[Task], Summary], None] | None = None,
              on_record: Callable[[dict[str, Any], Summary], None] | None = None) -> Summary:
    """Skip what is done, hand the rest to `execute`, and record each result as it arrives."""
    todo, done = batch_dir.split(plan.tasks)
    summary = Summary(skipped=len(done), invalid=len(plan.errors))
    if on_start is not None:
        on_start(todo, summary)
    started = time.perf_counter()
    try:
        for record in execute(todo):
            batch_dir.append(record)
            now = time.perf_counter() - started
            if record["status"] == "done":
                summary.done += 1
                summary.first_s = summary.first_s if summary.first_s is not None else now
                summary.last_s = now
            else:
                summary.failed += 1
            if on_record is not None:
                on_record(record, summary)
    finally:  # also on Ctrl-C: the summary says what was finished
        summary.elapsed_s = time.perf_counter() - started
    return summary


def local_executor(engine_factory: Callable[[], Engine], folder: Path, *, retries: int = 0) -> Executor:
    """Run tasks one image at a time on one Engine, built only when there is work (a resumed, finished batch
    doesn't load a model)."""

    def execute(tasks: list[Task]) -> Iterator[dict[str, Any]]:
        if not tasks:
            return
        from sdart.speed.builder import BACKGROUND_MIN_IMAGES, common_shapes, start_background_compile

        engine = engine_factory()
        # Enough images to pay for a compile: build the commonest shape's artifacts meanwhile, running eager.
        compiling = (start_background_compile(engine, common_shapes([task.request for task in tasks]))
                     if len(tasks) >= BACKGROUND_MIN_IMAGES else None)
        try:
            for task in tasks:
                yield generate_task(engine, task, folder, retries=retries)
        finally:
            if compiling is not None:
                compiling.stop()

    return execute
