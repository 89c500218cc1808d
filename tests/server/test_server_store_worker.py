"""The job store and the worker in-process (no HTTP): queue order, recovery, attempts, failures."""

from __future__ import annotations

import threading
import time

from PIL import Image

from sdart.engine import Batch, GenerationCancelled
from sdart.request import GenerationRequest
from sdart.server import store as store_module
from sdart.server.events import EventHub
from sdart.server.store import JobStore
from sdart.server.worker import Worker


def request(prompt: str, **fields) -> GenerationRequest:
    return GenerationRequest.parse({"prompt": prompt, "steps": 1, **fields})


def test_queue_order_recovery_and_cancel(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    a, b, c = (store.add(request(name), "api") for name in "abc")
    assert [store.position(job) for job in (a, b, c)] == [0, 1, 2]
    assert store.claim_next().id == a.id
    assert store.cancel_queued(b.id) and not store.cancel_queued(a.id)  # a is running: not the queue's to drop
    assert store.add(request("d"), "api", max_queued=1) is None  # c is queued: the queue is full at 1

    # The process dies with a running: on reopening, a goes back ahead of c.
    store.close()
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert store.recover() == 1
    assert [store.claim_next().id, store.claim_next().id, store.claim_next()] == [a.id, c.id, None]
    assert store.get(a.id).attempts == 2 and store.get(b.id).status == "cancelled"


def test_a_job_that_keeps_killing_the_process_is_failed(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.add(request("poison"), "api")
    for _ in range(store_module.MAX_ATTEMPTS):
        assert store.claim_next().id == job.id
        store.recover()
    assert store.claim_next() is None
    failed = store.get(job.id)
    assert failed.status == "failed" and "stopped while running this job 3 times" in failed.error


class FakeEngine:
    """Stands in for Engine: one 8×8 image per batch, or an error for prompts that ask for one."""

    def resolve_request(self, req: GenerationRequest) -> GenerationRequest:
        return req.replace(seed=req.seed if req.seed >= 0 else 5, width=req.width or 8, height=req.height or 8)

    def iter_batches(self, req, *, on_step=None, cancel=None, finish_batch=None):
        for iteration in range(req.n_iter):
            if req.prompt == "boom":
                raise RuntimeError("the UNet exploded")
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled()
            yield Batch(iteration, [Image.new("RGB", (8, 8))], [req.seed + iteration],
                        [f"{req.prompt}\nSeed: {req.seed + iteration}"], None, {})


def test_failed_job_records_its_error_and_the_worker_goes_on(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    worker = Worker(FakeEngine(), store, EventHub(), tmp_path / "images")
    bad = store.add(request("boom"), "api")
    good = store.add(request("fine", n_iter=2), "api")
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while store.get(good.id).status != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert store.get(bad.id).status == "failed"
    assert store.get(bad.id).error == "RuntimeError: the UNet exploded"
    assert store.get(good.id).status == "succeeded" and [r.seed for r in store.images(good.id)] == [5, 6]
    assert worker.alive() is False


def test_shutdown_requeues_the_running_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    started = threading.Event()

    class SlowEngine(FakeEngine):
        def iter_batches(self, req, *, on_step=None, cancel=None, finish_batch=None):
            started.set()
            cancel.wait(10)
            raise GenerationCancelled()

    worker = Worker(SlowEngine(), store, EventHub(), tmp_path / "images")
    job = store.add(request("interrupted by shutdown"), "api")
    worker.start()
    assert started.wait(10)
    worker.stop()
    assert store.get(job.id).status == "queued"  # runs again on the next start, not "cancelled"
