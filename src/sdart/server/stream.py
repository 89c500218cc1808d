"""One event stream for the whole server (native API): every job's events, whoever submitted it, and
server-wide ones, so that a page sees other clients' jobs and its queue view stays current.

    event: hello     {"version", "model", "queue": counts, "started_at"}   first, on every (re)connection
    event: queued    {"job", "source", "position"}
    event: started | progress | image | done    as on /jobs/{id}/events, with "job"
    event: deleted   {"job"}
    event: model     {"state": "loading" | "loaded" | "failed", "name", "error"?}
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from sdart.server.admission import Server
from sdart.server.events import EVERY_JOB
from sdart.server.native import ServerDep, relay, sse
from sdart.version import __version__

router = APIRouter(prefix="/api/v1")
RECONNECT_MS = 1000  # how soon a browser's EventSource retries after the stream drops (a restart)
STARTED_AT = time.time()  # tells a reconnecting client whether the server restarted meanwhile


@router.get("/events", summary="Server-Sent Events of every job and of the server (a model switch)",
            response_class=StreamingResponse)
async def events(server: ServerDep) -> StreamingResponse:
    return StreamingResponse(_stream(server), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(server: Server) -> AsyncIterator[str]:
    queue = server.hub.subscribe_all()
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        yield sse("hello", {"version": __version__, "model": server.engine.model.spec.name,
                            "queue": server.store.counts(), "started_at": STARTED_AT})
        async for message in relay(queue):
            yield message
    finally:
        server.hub.unsubscribe(EVERY_JOB, queue)
