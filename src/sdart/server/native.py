"""The native API under /api/v1: jobs with ids, live events, history, images."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from sdart.request import PICTURE_FIELDS, GenerationRequest
from sdart.sampling.samplers import SAMPLERS, SCHEDULE_TYPES
from sdart.server.admission import Server, submit
from sdart.server.errors import FieldErrors
from sdart.server.store import Job
from sdart.version import __version__

router = APIRouter(prefix="/api/v1")

ID_PATTERN = r"^[0-9a-f]{32}$"  # uuid4 hex: anything else is refused before it reaches the store
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="job id (32 hex digits)")]
ImageId = Annotated[str, Path(pattern=ID_PATTERN, description="image id (32 hex digits)")]
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


def get_server(request: Request) -> Server:
    return request.app.state.server


ServerDep = Annotated[Server, Depends(get_server)]


def image_url(image_id: str) -> str:
    return f"/api/v1/images/{image_id}"


def job_view(server: Server, job: Job) -> dict[str, Any]:
    """A job as clients see it: status, place in the queue, live progress, images."""
    images = server.store.images(job.id)
    progress = server.hub.progress(job.id) if job.status == "running" else None
    return {
        "id": job.id,
        "status": job.status,
        "position": server.store.position(job),
        "source": job.source,
        "request": _shown_request(job.request),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "error": job.error,
        "step": progress["step"] if progress else None,
        "total": progress["total"] if progress else None,
        "progress": progress["fraction"] if progress else (1.0 if job.status == "succeeded" else 0.0),
        "eta_s": progress["eta_s"] if progress else None,
        "images_total": job.request.images_total,
        "seeds": [record.seed for record in images],
        "images": [{"id": r.id, "url": image_url(r.id), "seed": r.seed, "position": r.position,
                    "infotext": r.infotext} for r in images],
    }


def _shown_request(request: GenerationRequest) -> dict[str, Any]:
    """The request without server paths: an img2img picture or mask is shown by its stored name."""
    fields = request.model_dump()
    for name in PICTURE_FIELDS:
        if fields.get(name):
            fields[name] = PurePath(fields[name]).name
    return fields


def find_job(server: Server, job_id: str) -> Job:
    job = server.store.get(job_id)
    if job is None:
        raise FieldErrors.one(("path", "job_id"), job_id, "no job with this id", status=404)
    return job


@router.post("/jobs", status_code=202, summary="Queue a generation job")
def create_job(request: GenerationRequest, server: ServerDep) -> dict[str, Any]:
    """Fields as in the CLI and A1111 (`prompt`, `steps`, `cfg_scale`, `seed`, `sampler_name`, …); for img2img,
    `init_image` as a base64 data: URL with `denoising_strength` and `resize_mode`.
    Answers at once with the job id; follow it with GET /jobs/{id} or its /events stream."""
    job = submit(server, request, "api")
    return {"id": job.id, "status": job.status, "position": server.store.position(job)}


@router.get("/jobs", summary="Job history, newest first")
def list_jobs(
    server: ServerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    q: Annotated[str | None, Query(max_length=200, description="only jobs whose prompt or negative prompt holds "
                                                                "this text")] = None,
) -> dict[str, Any]:
    jobs, total = server.store.history(limit, offset, status, q)
    following = offset + len(jobs)
    return {"jobs": [job_view(server, job) for job in jobs], "total": total,
            "next_offset": following if following < total else None}


@router.get("/jobs/{job_id}", summary="One job's status, progress and images")
def get_job(job_id: JobId, server: ServerDep) -> dict[str, Any]:
    return job_view(server, find_job(server, job_id))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel_job(job_id: JobId, server: ServerDep) -> dict[str, Any]:
    """A queued job leaves the queue; a running one stops after its current step, keeping finished images."""
    if server.store.cancel_queued(job_id):
        server.hub.publish(job_id, {"event": "done", "status": "cancelled", "error": None, "images": []})
        return {"id": job_id, "status": "cancelled"}
    job = find_job(server, job_id)
    if job.status == "running":
        server.worker.cancel(job_id)
        return {"id": job_id, "status": "cancelling"}
    return {"id": job_id, "status": job.status}  # already finished: nothing to stop


@router.get("/jobs/{job_id}/preview", summary="Live preview of a running job (PNG at latent size)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}, 204: {}})
def job_preview(job_id: JobId, server: ServerDep) -> Response:
    """The latest step's latents drawn without the VAE (A1111's cheap approximation, 1/8 of the image per side).
    204 when there is nothing to draw: the job waits, has ended, or its model has no preview factors."""
    find_job(server, job_id)  # 404 for an unknown id
    png = server.worker.preview_png(job_id) if server.worker.running_job_id() == job_id else None
    if png is None:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/events", summary="Server-Sent Events: started, progress (each step), image, done",
            response_class=StreamingResponse)
async def job_events(job_id: JobId, server: ServerDep) -> StreamingResponse:
    find_job(server, job_id)  # 404 before the stream starts
    return StreamingResponse(_event_stream(server, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _event_stream(server: Server, job_id: str) -> AsyncIterator[str]:
    queue = server.hub.subscribe(job_id)  # before reading the state, so no event falls in between
    try:
        job = find_job(server, job_id)
        yield sse("status", job_view(server, job))
        if job.finished:
            yield sse("done", {"status": job.status, "error": job.error,
                                "images": [r.id for r in server.store.images(job_id)]})
            return
        async for message in relay(queue, last=("done", "deleted")):
            yield message
    finally:
        server.hub.unsubscribe(job_id, queue)


async def relay(queue: asyncio.Queue, last: tuple[str, ...] = ()) -> AsyncIterator[str]:
    """Hub events from `queue` as SSE messages, with a heartbeat when idle, up to an event named in `last`."""
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        name = event["event"]
        yield sse(name, {key: value for key, value in event.items() if key != "event"})
        if name in last:
            return


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/images/{image_id:path}", summary="An image as PNG, with its `parameters` text chunk",
            response_class=FileResponse)
def get_image(image_id: ImageId, server: ServerDep) -> FileResponse:
    record = server.store.image(image_id)
    if record is None:
        raise FieldErrors.one(("path", "image_id"), image_id, "no image with this id", status=404)
    # The file name comes from the store (the server chose it), never from the client.
    return FileResponse(server.images_dir / record.filename, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.get("/health", summary="Liveness, the loaded model and queue counts (no auth needed)")
def health(server: ServerDep, response: Response) -> dict[str, Any]:
    alive = server.worker.alive()
    if not alive:
        response.status_code = 503
    compiled = getattr(server.engine, "compiled", None)  # which components run compiled, which are being built
    return {"status": "ok" if alive else "worker stopped", "version": __version__, "model": server.engine.model.spec.name,
            "queue": server.store.counts(), "compile": compiled.status() if compiled is not None else None}


@router.get("/models", summary="Models this server can run")
def models(server: ServerDep) -> list[dict[str, Any]]:
    return [{"name": e.name, "loaded": e.loaded, "hash": e.hash} for e in server.catalog.entries()]


@router.get("/request-schema", summary="The job request's fields: JSON Schema with defaults and limits")
def request_schema() -> dict[str, Any]:
    """What POST /jobs accepts on this server, so that a client offers only fields the server knows (a field it
    does not know is refused with 422)."""
    return GenerationRequest.model_json_schema()


@router.get("/samplers", summary="Sampler names and schedule types")
def samplers() -> dict[str, Any]:
    return {"samplers": [{"name": s.name, "aliases": list(s.aliases), "default_schedule": s.automatic,
                          "schedules": s.takes_schedules, "alias_of": s.alias_of, "note": s.note} for s in SAMPLERS],
            "schedule_types": list(SCHEDULE_TYPES)}
