"""The worker: one thread that takes jobs from the store in order and runs them on the one Engine.

An Engine is not safe to use from two threads, so every use of it (jobs, model switches) holds `engine_lock`.
A job that fails records its error and the worker goes on; nothing a request contains can stop the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from sdart.engine import Engine
from sdart.images.output import png_bytes, save_image
from sdart.models.errors import ModelLoadError
from sdart.request import RequestError
from sdart.run.progress import GenerationCancelled, StepProgress
from sdart.server.events import EventHub
from sdart.server.store import Job, JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Worker:
    def __init__(self, engine: Engine, store: JobStore, hub: EventHub, images_dir: Path):
        self.engine = engine
        self.store = store
        self.hub = hub
        self.images_dir = images_dir
        self.engine_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._current: tuple[str, threading.Event] | None = None  # (job id, its cancel flag)
        self._finish_batch = threading.Event()  # A1111's interrupt/skip: end the running batch at this step
        self._current_lock = threading.Lock()
        self._pending_cancels: set[str] = set()
        self._latest_latents: tuple[str, object] | None = None  # (job id, its latents after the last step)
        self._thread = threading.Thread(target=self._loop, name="sdart-worker", daemon=True)

    # --- control (any thread) ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; the interrupted job goes back to the queue for the next start."""
        self._stopping.set()
        self._wake.set()
        with self._current_lock:
            if self._current:
                self._current[1].set()
        self._thread.join(timeout)

    def notify(self) -> None:
        """A job was queued: stop waiting."""
        self._wake.set()

    def running_job_id(self) -> str | None:
        with self._current_lock:
            return self._current[0] if self._current else None

    def cancel(self, job_id: str) -> None:
        """Stop job `job_id`, which the store shows running, at its next step.

        The store marks a job running a moment before this thread takes it up; a cancel that falls in between
        is kept in `_pending_cancels` and applied when the job starts.
        """
        with self._current_lock:
            if self._current is not None and self._current[0] == job_id:
                self._current[1].set()
            else:
                self._pending_cancels.add(job_id)

    def cancel_running(self) -> str | None:
        """Stop whatever job is running (A1111's /interrupt); returns its id."""
        with self._current_lock:
            if self._current is None:
                return None
            self._current[1].set()
            return self._current[0]

    def finish_running_batch(self, *, stop: bool) -> str | None:
        """A1111's interrupt (`stop`) and skip: end the running batch after its current step and keep the picture
        it has so far; interrupt then stops the job, skip goes on with the next batch. Returns the job's id."""
        with self._current_lock:
            if self._current is None:
                return None
            self._finish_batch.set()  # before the cancel flag: the step sees "finish" first and keeps the batch
            if stop:
                self._current[1].set()
            return self._current[0]

    def _take_finish_batch(self) -> bool:
        if self._finish_batch.is_set():
            self._finish_batch.clear()
            return True
        return False

    def preview_png(self, job_id: str) -> bytes | None:
        """The running job's live preview (sdart.preview) as PNG bytes, at latent size; None before its first
        step, after it ends, or for a model family without preview factors."""
        from sdart.images.preview import latent_preview

        latest = self._latest_latents
        if latest is None or latest[0] != job_id or latest[1] is None:
            return None
        image = latent_preview(latest[1], self.engine.model.family)
        return png_bytes(image) if image is not None else None

    def alive(self) -> bool:
        return self._thread.is_alive()

    def with_engine(self, action: Callable[[Engine], T]) -> T:
        """Run `action` on the engine between jobs (e.g. a model switch); blocks until the running job ends."""
        with self.engine_lock:
            return action(self.engine)

    # --- the loop (worker thread) ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next()
            except Exception:  # a locked or broken database: log, wait, retry rather than die
                log.exception("could not read the job queue")
                self._stopping.wait(1.0)
                continue
            if job is None:
                # Submissions call notify(); the timeout only bounds the wait if a wake-up is ever missed.
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        cancel = threading.Event()
        with self._current_lock:
            self._current = (job.id, cancel)
            self._finish_batch.clear()
            if job.id in self._pending_cancels:
                self._pending_cancels.discard(job.id)
                cancel.set()
        try:
            status, error = self._generate(job, cancel)
            if status == "interrupted":
                self.store.requeue(job.id)
                return
            self.store.finish(job.id, status, error)
        finally:
            with self._current_lock:
                self._current = None
            self._latest_latents = None
        self.hub.publish(job.id, {"event": "done", "status": status, "error": error,
                                  "images": [r.id for r in self.store.images(job.id)]})

    def _generate(self, job: Job, cancel: threading.Event) -> tuple[str, str | None]:
        """Run one job, saving each image as its batch is decoded; returns (status, error message)."""
        try:
            with self.engine_lock:
                # 1. Fix seed and size once and store them, so that a resumed job makes the same images.
                request = self.engine.resolve_request(job.request)
                if request != job.request:
                    self.store.set_request(job.id, request)
                # 2. Resume: skip the batches a previous run of this job already saved.
                done = {record.position for record in self.store.images(job.id)}
                first = next((i for i in range(request.n_iter)
                              if any(i * request.batch_size + j not in done for j in range(request.batch_size))),
                             request.n_iter)
                if first == request.n_iter:
                    return "succeeded", None
                remaining = request.starting_at(first * request.batch_size).replace(n_iter=request.n_iter - first)
                self.hub.publish(job.id, {"event": "started", "images_total": request.images_total,
                                          "resumed_from": first * request.batch_size})

                def on_step(p: StepProgress) -> None:
                    self._latest_latents = (job.id, p.latents)  # a reference: drawn only when a client asks
                    overall = replace(p, iteration=p.iteration + first, iterations=request.n_iter)
                    self.hub.publish(job.id, progress_event(overall))

                # 3. Generate; each image is saved and recorded as soon as its batch is decoded.
                for batch in self.engine.iter_batches(remaining, on_step=on_step, cancel=cancel,
                                                      finish_batch=self._take_finish_batch):
                    for j, (image, infotext, seed) in enumerate(zip(batch.images, batch.infotexts, batch.seeds)):
                        position = (first + batch.iteration) * request.batch_size + j
                        if position in done:
                            continue
                        path = save_image(image, infotext, seed, self.images_dir)
                        record = self.store.add_image(job.id, position, seed, path.name, infotext)
                        self.hub.publish(job.id, {"event": "image", "id": record.id, "position": position,
                                                  "seed": seed})
            if cancel.is_set():  # stopped in the last batch, which kept its picture so far (A1111's interrupt)
                raise GenerationCancelled()
            return "succeeded", None
        except GenerationCancelled:
            return ("interrupted", None) if self._stopping.is_set() else ("cancelled", None)
        except (RequestError, ModelLoadError, ValueError) as exc:
            return "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker
            log.exception("job %s failed", job.id)
            return "failed", f"{type(exc).__name__}: {exc}"


def progress_event(p: StepProgress) -> dict:
    return {"event": "progress", "step": p.step, "total": p.total, "iteration": p.iteration,
            "iterations": p.iterations, "fraction": round(p.fraction, 4),
            "eta_s": None if p.eta_s is None else round(p.eta_s, 2), "it_per_s": round(p.it_per_s, 2)}
