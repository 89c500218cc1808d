"""The Ray glue that needs no cluster: `serve run` argument parsing, the worker pool the Serve API uses, and
RemoteEngine's decoding of a replica's event stream (with a stand-in handle)."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from sdart.engine import GenerationCancelled
from sdart.request import GenerationRequest
from sdart.server.ray import RemoteEngine, ServeScale, WorkerPool, parse_builder_args
from sdart.settings import Settings


def test_builder_args_split_into_settings_and_scale():
    fields, scale = parse_builder_args({"model": "org/m", "data_dir": "/d", "replicas": "3", "gpus_per_replica": "0.5",
                                        "max_replicas": 4})
    assert fields == {"model": "org/m", "data_dir": "/d"}
    assert scale == ServeScale(replicas=3, max_replicas=4, gpus_per_replica=0.5)
    assert scale.autoscaling and scale.most == 4
    assert ServeScale(replicas=2).most == 2 and not ServeScale(replicas=2).autoscaling
    with pytest.raises(ValueError, match="replicas = 'two'"):
        parse_builder_args({"replicas": "two"})


class FakeWorker:
    def __init__(self, running: str | None = None):
        self.running = running
        self.cancelled: list[str] = []
        self.engine_lock = threading.Lock()
        self.engine = "engine"

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def running_job_id(self) -> str | None:
        return self.running

    def cancel_running(self) -> str | None:
        return self.running


def test_worker_pool_sends_a_cancel_to_whichever_worker_runs_the_job():
    idle, busy = FakeWorker(), FakeWorker(running="job-b")
    pool = WorkerPool([idle, busy])
    pool.cancel("job-b")
    assert busy.cancelled == ["job-b"]  # the worker running it stops it at the next step
    assert pool.running_job_id() == "job-b" and pool.cancel_running() == "job-b"
    assert pool.with_engine(lambda engine: engine) == "engine"
    assert not idle.engine_lock.locked() and not busy.engine_lock.locked()


class FakeStream:
    def __init__(self, events):
        self.events = events
        self.cancelled = False

    def __iter__(self):
        return iter(self.events)

    def cancel(self):
        self.cancelled = True


class FakeHandle:
    """Stands in for the ModelReplica handle: `.options(stream=True).stream.remote(fields)`."""

    def __init__(self, events):
        self.stream_response = FakeStream(events)
        self.sent = None
        self.stream = self

    def options(self, stream: bool):
        assert stream
        return self

    def remote(self, fields):
        self.sent = fields
        return self.stream_response


INFO = {"reference": "/models/tiny", "name": "tiny", "hash": "abc", "native_size": 64, "family": "sd1",
        "device": "cpu", "dtype": "float32", "load_s": 1.0}


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def events():
    step = {"kind": "step", "step": 1, "total": 2, "iteration": 0, "iterations": 1, "elapsed": 0.1, "it_per_s": 10.0}
    batch = {"kind": "batch", "iteration": 0, "seeds": [5], "infotexts": ["fox\nSeed: 5"], "nsfw": None,
             "timings": {"total_s": 0.2}, "images": [png("red")]}
    return [step, batch]


def test_remote_engine_turns_the_replica_stream_into_steps_and_batches():
    handle = FakeHandle(events())
    engine = RemoteEngine(handle, Settings(), INFO)
    assert engine.reference == "/models/tiny" and engine.model.native_size == 64
    request = engine.resolve_request(GenerationRequest(prompt="fox", seed=5))
    assert (request.width, request.height) == (64, 64)  # the replica's native size

    steps = []
    [batch] = list(engine.iter_batches(request, on_step=steps.append))

    assert handle.sent["model"] == "/models/tiny"  # pinned: a replica may hold another model from an earlier job
    assert [(s.step, s.total) for s in steps] == [(1, 2)]
    assert batch.seeds == [5] and batch.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert handle.stream_response.cancelled  # the stream is always released


def test_remote_engine_stops_when_cancelled_and_releases_the_replica():
    handle = FakeHandle(events())
    cancel = threading.Event()
    engine = RemoteEngine(handle, Settings(), INFO)
    with pytest.raises(GenerationCancelled):
        for _ in engine.iter_batches(GenerationRequest(prompt="fox", seed=5), on_step=lambda p: cancel.set(),
                                     cancel=cancel):
            pass
    assert handle.stream_response.cancelled
