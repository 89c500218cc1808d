"""Live job events: the worker thread publishes, async request handlers (SSE, A1111 txt2img) listen.

Progress is kept in memory only: steps come many times a second and are worthless after a restart, while the
job's state that matters (status, images, error) is in the store.

Listeners follow one job, or every job (`subscribe_all`: the web page's queue view, other clients' jobs included),
which also hears server-wide events (`broadcast`: a model switch).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]  # {"event": "queued" | "started" | "progress" | "image" | "done" | "deleted", ...}
EVERY_JOB = ""  # the listener key of subscribe_all (job ids are 32 hex digits, never empty)


@dataclass
class _Listener:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[_Listener]] = defaultdict(list)
        self._progress: dict[str, Event] = {}  # job id → its latest "progress" event, while it runs

    def subscribe(self, job_id: str) -> asyncio.Queue[Event]:
        """A queue of this job's events from now on (call from the event loop; pair with unsubscribe)."""
        listener = _Listener(asyncio.get_running_loop())
        with self._lock:
            self._listeners[job_id].append(listener)
        return listener.queue

    def subscribe_all(self) -> asyncio.Queue[Event]:
        """Every job's events, each with its job id under "job", and the server-wide ones (pair with
        unsubscribe(EVERY_JOB, queue))."""
        return self.subscribe(EVERY_JOB)

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[Event]) -> None:
        with self._lock:
            listeners = [item for item in self._listeners.get(job_id, []) if item.queue is not queue]
            if listeners:
                self._listeners[job_id] = listeners
            else:
                self._listeners.pop(job_id, None)

    def publish(self, job_id: str, event: Event) -> None:
        """Deliver `event` to every listener of the job; safe from any thread, never blocks."""
        with self._lock:
            if event["event"] == "progress":
                self._progress[job_id] = event
            elif event["event"] == "done":
                self._progress.pop(job_id, None)
            listeners = list(self._listeners.get(job_id, []))
            everyone = list(self._listeners.get(EVERY_JOB, []))
        _deliver(listeners, event)
        _deliver(everyone, {**event, "job": job_id})

    def broadcast(self, event: Event) -> None:
        """A server-wide event (no job) for the listeners of every job."""
        with self._lock:
            everyone = list(self._listeners.get(EVERY_JOB, []))
        _deliver(everyone, event)

    def progress(self, job_id: str) -> Event | None:
        with self._lock:
            return self._progress.get(job_id)


def _deliver(listeners: list[_Listener], event: Event) -> None:
    for listener in listeners:
        try:
            listener.loop.call_soon_threadsafe(listener.queue.put_nowait, event)
        except RuntimeError:  # that listener's loop is closed: the server is shutting down
            pass
