"""Letting a request into the queue: the server's limits, the model name, the img2img picture, and the queue
length.

Both APIs and the web page submit through `submit`, so a limit is enforced in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sdart.engine import Engine
from sdart.images.initimage import is_data_url, open_init_image
from sdart.images.output import save_image_as
from sdart.models.vaes import OWN_VAE, find_vaes
from sdart.request import PICTURE_FIELDS, GenerationRequest, RequestError
from sdart.run.upscale import hires_upscaler_problem
from sdart.server.catalog import ModelCatalog
from sdart.server.errors import FieldErrors
from sdart.server.events import EventHub
from sdart.server.store import Job, JobStore
from sdart.server.worker import Worker
from sdart.settings import Settings

# Seconds a client told "queue full" should wait: roughly one short job.
RETRY_AFTER_S = 10


@dataclass
class Server:
    """Everything a route needs, built once by the app's lifespan."""

    settings: Settings
    engine: Engine
    store: JobStore
    hub: EventHub
    worker: Worker
    catalog: ModelCatalog
    images_dir: Path
    inputs_dir: Path  # pictures uploaded for img2img, named by their content's hash


def check_limits(request: GenerationRequest, settings: Settings) -> None:
    """FieldErrors naming every field over the configured limits."""
    errors: list[tuple[tuple[str, ...], object, str]] = []
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is not None and value > settings.max_side:
            errors.append((("body", name), value, f"must be at most {settings.max_side} on this server (max_side)"))
    if request.steps > settings.max_steps:
        errors.append((("body", "steps"), request.steps,
                       f"must be at most {settings.max_steps} on this server (max_steps)"))
    if request.images_total > settings.max_images:
        errors.append((("body", "batch_size"), request.batch_size,
                       f"batch_size × n_iter = {request.images_total} images; at most {settings.max_images} per job "
                       "on this server (max_images)"))
    for name in ("prompt", "negative_prompt"):
        text = getattr(request, name)
        if len(text) > settings.max_prompt_chars:
            errors.append((("body", name), text, f"is {len(text)} characters; at most {settings.max_prompt_chars} "
                                                 "on this server (max_prompt_chars)"))
    if errors:
        raise FieldErrors(errors)


def lora_warnings(server: Server, request: GenerationRequest) -> list[str]:
    """The request's `<lora:…>` tags against the server's LoRA folder: FieldErrors (422 naming `prompt` and the
    folder) for a name that is no file when `missing_lora` is "error"; otherwise what will not be applied, one
    sentence each (what A1111 puts in its response's `comments`: "Failed to find networks: NAME")."""
    try:
        return server.engine.prompt_loras(request).warnings
    except RequestError as exc:
        raise FieldErrors.from_request_error(exc) from None


def submit(server: Server, request: GenerationRequest, source: str, *,
           not_applied: list[str] | None = None) -> Job:
    """Check, queue and wake the worker; FieldErrors (422, or 429 when the queue is full) otherwise. What the
    request's `<lora:…>` tags leave out (A1111's API draws without a LoRA it can't find) is added to `not_applied`.

    An img2img picture (and inpainting mask) arrives as a data: URL and is queued as a stored file. Every check but
    the queue's length comes before a picture is stored; a request refused for a full queue removes what it created.
    """
    check_limits(request, server.settings)
    request = _catalogue_reference(server, request, "model")
    if request.vae is not None and request.vae not in OWN_VAE and request.vae not in find_vaes(server.settings.vae_dir):
        names = ", ".join([*OWN_VAE[:2], *find_vaes(server.settings.vae_dir)])
        raise FieldErrors.one(("body", "vae"), request.vae, f"unknown VAE; this server has: {names} (vae_dir)")
    request = _check_passes(server, request)
    if source == "a1111":  # A1111 draws without a LoRA it can't find and says so; its API keeps that
        request = request.replace(missing_lora="warn")
    warnings = lora_warnings(server, request)
    if not_applied is not None:
        not_applied += warnings
    pictures = {name: getattr(request, name) for name in PICTURE_FIELDS if getattr(request, name)}
    for name, value in pictures.items():
        if not is_data_url(value):  # clients never name files on the server
            raise FieldErrors.one(("body", name), value, "the server reads no paths from clients; send the picture "
                                  "itself as a base64 data: URL (or to /sdapi/v1/img2img)")
    created: list[Path] = []
    try:
        for name, value in pictures.items():
            try:
                path, new = store_upload(server.inputs_dir, value)
            except ValueError as exc:  # its header reads but its pixels don't: truncated, corrupt
                raise FieldErrors.one(("body", name), value, str(exc)) from None
            created += [path] if new else []
            request = request.replace(**{name: str(path)})
        return _queue(server, request, source)
    except FieldErrors:
        for path in created:
            path.unlink(missing_ok=True)
        raise


def _check_passes(server: Server, request: GenerationRequest) -> GenerationRequest:
    """The hires upscaler and the refiner against this server's folders and catalogue, before the job is queued
    (A1111: "could not find upscaler named …"); the refiner's name becomes the catalogue's reference."""
    if request.enable_hr and (problem := hires_upscaler_problem(request.hr_upscaler, server.settings.upscaler_dir)):
        raise FieldErrors.one(("body", "hr_upscaler"), request.hr_upscaler, problem)
    return _catalogue_reference(server, request, "refiner_checkpoint")


def _catalogue_reference(server: Server, request: GenerationRequest, field: str) -> GenerationRequest:
    """The model `field` names (by name or A1111 title), as the catalogue's reference; 422 for one it lacks."""
    name = getattr(request, field)
    if name is None:
        return request
    entry = server.catalog.find(name)
    if entry is None:
        raise FieldErrors.one(("body", field), name,
                              f"unknown model; this server has: {', '.join(server.catalog.names())}")
    return request.replace(**{field: entry.reference})


def store_upload(folder: Path, data_url: str) -> tuple[Path, bool]:
    """An uploaded picture (a data: URL, decoded when the request was checked) as PNG in `folder`, upright RGB as a
    job reads it, named by a hash of its pixels (the same picture is stored once); and whether this call created the
    file. Written like every image (output.save_image_as): whole or not at all."""
    picture = open_init_image(data_url)
    digest = hashlib.sha256(repr(picture.size).encode() + picture.tobytes()).hexdigest()[:32]
    path = folder / f"{digest}.png"
    if path.exists():
        return path, False
    return save_image_as(picture, None, path), True


def _queue(server: Server, request: GenerationRequest, source: str) -> Job:
    job = server.store.add(request, source, max_queued=server.settings.max_queue)
    if job is None:
        raise FieldErrors.one(("body",), None, f"the queue is full ({server.settings.max_queue} jobs waiting); "
                              f"retry in {RETRY_AFTER_S} s", status=429, headers={"Retry-After": str(RETRY_AFTER_S)})
    server.worker.notify()
    server.hub.publish(job.id, {"event": "queued", "source": source, "position": server.store.position(job)})
    return job
