"""Keeping the history tidy and the queue visible (native API): delete a finished job with its files, and the
jobs waiting and running, in the order they will run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from sdart.request import PICTURE_FIELDS
from sdart.server.admission import Server
from sdart.server.errors import FieldErrors
from sdart.server.native import JobId, ServerDep, job_view

router = APIRouter(prefix="/api/v1")


@router.delete("/jobs/{job_id}", summary="Delete a finished job: its images, its records and its uploads")
def delete_job(job_id: JobId, server: ServerDep) -> dict[str, Any]:
    """A job still queued or running is refused (409): cancel it first with POST /jobs/{id}/cancel.
    An uploaded picture (img2img, mask) is removed too unless another job still uses it."""
    job, filenames = server.store.delete_finished(job_id)
    if job is None:
        raise FieldErrors.one(("path", "job_id"), job_id, "no job with this id", status=404)
    if not job.finished:
        raise FieldErrors.one(("path", "job_id"), job_id, f"the job is {job.status}; cancel it first "
                              f"(POST /api/v1/jobs/{job_id}/cancel), then delete it", status=409)
    # The records went first: a crash now leaves only files no job owns, removed at the next start.
    for name in filenames:
        (server.images_dir / name).unlink(missing_ok=True)
    _remove_unused_uploads(server, {getattr(job.request, name) for name in PICTURE_FIELDS} - {None})
    server.hub.publish(job_id, {"event": "deleted"})
    return {"id": job_id, "deleted": True, "images": len(filenames)}


def _remove_unused_uploads(server: Server, paths: set[str]) -> None:
    for path in paths - server.store.pictures_in_use(paths):
        stored = Path(path)
        if stored.parent == server.inputs_dir:  # only files the server stored itself
            stored.unlink(missing_ok=True)


@router.get("/queue", summary="The jobs running and waiting, in the order they run, with progress")
def queue(server: ServerDep) -> dict[str, Any]:
    jobs = [job_view(server, job) for job in server.store.waiting()]
    return {"jobs": jobs, "running": sum(job["status"] == "running" for job in jobs),
            "queued": sum(job["status"] == "queued" for job in jobs)}
