"""The A1111-compatible API under /sdapi/v1, run through the same queue as the native API.

Field names, defaults and response shapes follow A1111's modules/api/models.py and api.py, so existing clients
(the `webuiapi` library, scripts, editor plug-ins) work unchanged. Fields sdart has no use for (hires fix,
scripts, face restoration, …) are accepted and ignored, as A1111 ignores what an extension doesn't read.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from PIL import Image
from starlette.concurrency import run_in_threadpool

from sdart.images.infotext import parse_infotext
from sdart.images.initimage import decode_base64_image
from sdart.models.errors import ModelLoadError
from sdart.request import PICTURE_FIELDS, GenerationRequest, RequestError
from sdart.sampling.samplers import SAMPLERS, SCHEDULE_TYPES
from sdart.server.admission import Server, submit
from sdart.server.catalog import title
from sdart.server.errors import FieldErrors
from sdart.server.native import find_job, get_server
from sdart.server.store import ImageRecord, Job

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])
ServerDep = Annotated[Server, Depends(get_server)]

# A1111's StableDiffusionTxt2ImgProcessingAPI defaults (sampler_index "Euler" is what a missing
# sampler_name falls back to); everything else is GenerationRequest's default.
A1111_DEFAULTS: dict[str, Any] = {"prompt": "", "negative_prompt": "", "steps": 50, "cfg_scale": 7.0, "seed": -1,
                                  "width": 512, "height": 512, "batch_size": 1, "n_iter": 1, "sampler_name": "Euler",
                                  "scheduler": "Automatic"}
# override_settings keys that map to request fields.
OVERRIDES = {"CLIP_stop_at_last_layers": "clip_skip", "sd_model_checkpoint": "model"}


# StableDiffusionImg2ImgProcessingAPI's own fields, on top of txt2img's (inpainting: mask_blur, invert).
IMG2IMG_DEFAULTS: dict[str, Any] = {"denoising_strength": 0.75, "resize_mode": 0, "mask_blur": 4,
                                    "inpainting_mask_invert": 0}


def to_request(payload: Any, *, init_image: str | None = None, mask: str | None = None) -> GenerationRequest:
    """An A1111 txt2img (or, with `init_image`, img2img) payload → GenerationRequest; FieldErrors name the A1111
    field that is wrong."""
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, "must be a JSON object of txt2img fields")
    defaults = {**A1111_DEFAULTS, **(IMG2IMG_DEFAULTS if init_image else {})}
    fields = {name: payload[name] for name in defaults if payload.get(name) is not None}
    if "sampler_name" not in fields and payload.get("sampler_index") is not None:
        fields["sampler_name"] = payload["sampler_index"]
    overrides = payload.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise FieldErrors.one(("body", "override_settings"), overrides, "must be an object of setting: value")
    for key, name in OVERRIDES.items():
        if overrides.get(key) is not None:
            fields[name] = overrides[key]
    if init_image:
        fields["init_image"] = init_image
    if mask:
        fields["mask"] = mask
    try:
        return GenerationRequest.parse({**defaults, **fields})
    except RequestError as exc:
        raise FieldErrors.from_request_error(exc) from None


@router.post("/txt2img", summary="A1111 txt2img: queue a job and answer when it is done")
async def txt2img(server: ServerDep, payload: Annotated[Any, Body()] = None) -> dict[str, Any]:
    request = to_request(payload)
    return await _answer(server, payload, request, await run_in_threadpool(submit, server, request, "a1111"))


@router.post("/img2img", summary="A1111 img2img: redraw init_images[0] after the prompt; answers when done")
async def img2img(server: ServerDep, payload: Annotated[Any, Body()] = None) -> dict[str, Any]:
    """`init_images` (base64, the first is used for every image), `denoising_strength` (0.75), `resize_mode`
    (0 just resize, 1 crop and resize, 2 resize and fill) and txt2img's fields; inpainting with `mask` (white =
    redraw), `mask_blur` (4) and `inpainting_mask_invert`. The other inpainting options keep A1111's defaults."""
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, "must be a JSON object of img2img fields")
    images = payload.get("init_images")
    if not isinstance(images, list) or not images:
        raise FieldErrors.one(("body", "init_images"), images, "must be a list of base64-encoded images")
    picture = _data_url(images[0], ("body", "init_images", "0"))
    mask = _data_url(payload["mask"], ("body", "mask")) if payload.get("mask") else None
    request = to_request(payload, init_image=picture, mask=mask)
    return await _answer(server, payload, request, await run_in_threadpool(submit, server, request, "a1111"))


async def _answer(server: Server, payload: dict, request: GenerationRequest, job: Job) -> dict[str, Any]:
    """Wait for `job` and answer as A1111 does: A1111 blocks until the images exist; so do we, but the job runs
    in the queue like any other."""
    queue = server.hub.subscribe(job.id)
    try:
        while not (job := find_job(server, job.id)).finished:
            try:
                await asyncio.wait_for(_until_done(queue), timeout=5.0)
            except TimeoutError:  # re-read the store: the job may have ended before we subscribed
                pass
    finally:
        server.hub.unsubscribe(job.id, queue)
    if job.status == "failed":
        raise FieldErrors.one(("body",), None, f"generation failed: {job.error}", status=500)
    records = server.store.images(job.id)
    send_images = payload.get("send_images", True) is not False
    images = [await run_in_threadpool(_b64_file, server.images_dir / r.filename) for r in records] if send_images else []
    # A1111 echoes the payload, init images only when asked; the server's own file path is never shown.
    echoed = {k: v for k, v in payload.items()
              if k not in ("init_images", "mask") or payload.get("include_init_images")}
    return {"images": images, "parameters": {**echoed, **request.model_dump(exclude={"model", *PICTURE_FIELDS})},
            "info": json.dumps(_info(server, job.request, records, job.status == "cancelled"))}


async def _until_done(queue: asyncio.Queue) -> None:
    while (await queue.get())["event"] != "done":
        pass


def _data_url(value: Any, location: tuple[str, ...]) -> str:
    """An A1111 base64 picture as a data: URL (refused here, with A1111's field name, if it is not a picture)."""
    _decode_image(value, location)
    return value if value.startswith("data:") else f"data:image/png;base64,{value}"


def _decode_image(value: Any, location: tuple[str, ...]) -> bytes:
    """The bytes of a base64 image (optionally a data: URL) whose header is an image's; FieldErrors otherwise."""
    if not isinstance(value, str) or not value:
        raise FieldErrors.one(location, value, "must be a base64-encoded image (optionally a data: URL)")
    try:
        return decode_base64_image(value)
    except ValueError as exc:
        raise FieldErrors.one(location, value, str(exc)) from None


def _b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _info(server: Server, request: GenerationRequest, records: list[ImageRecord], interrupted: bool) -> dict[str, Any]:
    """A1111's `Processed.js()` fields that clients read."""
    seeds = [r.seed for r in records]
    return {
        "prompt": request.prompt, "all_prompts": [request.prompt] * len(records),
        "negative_prompt": request.negative_prompt, "all_negative_prompts": [request.negative_prompt] * len(records),
        "seed": seeds[0] if seeds else request.seed, "all_seeds": seeds,
        "subseed": -1, "all_subseeds": [-1] * len(records), "subseed_strength": 0,
        "width": request.width, "height": request.height, "sampler_name": request.sampler_name,
        "scheduler": request.scheduler, "cfg_scale": request.cfg_scale, "steps": request.steps,
        "batch_size": request.batch_size, "clip_skip": request.clip_skip, "restore_faces": False,
        "sd_model_name": server.engine.model.spec.name, "sd_model_hash": server.engine.model.hash,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": request.denoising_strength if request.init_image else None,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": [r.infotext for r in records],
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "is_using_inpainting_conditioning": False,
        "interrupted": interrupted,
    }


@router.get("/progress", summary="A1111 progress of the running job")
def progress(server: ServerDep, skip_current_image: bool = False) -> dict[str, Any]:
    running = server.worker.running_job_id()
    event = server.hub.progress(running) if running else None
    preview = None if skip_current_image or not running else server.worker.preview_png(running)
    counts = server.store.counts()
    return {
        "progress": event["fraction"] if event else 0.0,
        "eta_relative": (event["eta_s"] or 0.0) if event else 0.0,
        "state": {"skipped": False, "interrupted": False, "job": f"job {running}" if running else "",
                  "job_count": counts["queued"] + counts["running"], "job_timestamp": "0",
                  "job_no": event["iteration"] if event else 0,
                  "sampling_step": event["step"] if event else 0, "sampling_steps": event["total"] if event else 0},
        # A1111's cheap latent approximation at latent size (sdart.preview), drawn per poll, not per step.
        "current_image": base64.b64encode(preview).decode("ascii") if preview is not None else None,
        "textinfo": None,
    }


@router.post("/interrupt", summary="A1111 interrupt: stop the running job after its current step")
def interrupt(server: ServerDep) -> dict[str, Any]:
    server.worker.cancel_running()
    return {}


@router.post("/skip", summary="A1111 skip: same as interrupt (sdart jobs are not split into skippable parts)")
def skip(server: ServerDep) -> dict[str, Any]:
    server.worker.cancel_running()
    return {}


@router.get("/sd-models", summary="A1111 checkpoint list")
def sd_models(server: ServerDep) -> list[dict[str, Any]]:
    return [{"title": title(e), "model_name": e.name, "hash": e.hash, "sha256": None, "filename": e.name,
             "config": None} for e in server.catalog.entries()]


@router.post("/refresh-checkpoints")
def refresh_checkpoints() -> None:
    return None


@router.get("/samplers", summary="A1111 sampler list")
def samplers() -> list[dict[str, Any]]:
    return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS]


@router.get("/schedulers", summary="A1111 schedule types")
def schedulers() -> list[dict[str, Any]]:
    return [{"name": name.lower(), "label": name, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for name in SCHEDULE_TYPES]


@router.get("/scripts", summary="A1111 script list (sdart has none)")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/options", summary="A1111 options (the ones sdart has)")
def get_options(server: ServerDep) -> dict[str, Any]:
    loaded = next(e for e in server.catalog.entries() if e.loaded)
    return {"sd_model_checkpoint": title(loaded), "sd_checkpoint_hash": loaded.hash,
            "CLIP_stop_at_last_layers": 1, "samples_format": "png"}


@router.post("/options", summary="A1111 options: `sd_model_checkpoint` switches the model; others are ignored")
def set_options(server: ServerDep, payload: Annotated[Any, Body()] = None) -> None:
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, "must be a JSON object of option: value")
    name = payload.get("sd_model_checkpoint")
    if name is None:
        return None
    entry = server.catalog.find(str(name))
    if entry is None:
        raise FieldErrors.one(("body", "sd_model_checkpoint"), name,
                              f"unknown model; this server has: {', '.join(server.catalog.names())}")
    if not entry.loaded:
        try:
            # Waits for the running job: the worker and this switch take turns on the engine.
            server.worker.with_engine(lambda engine: engine.load(entry.reference))
        except ModelLoadError as exc:
            raise FieldErrors.one(("body", "sd_model_checkpoint"), name, str(exc)) from None
    return None


@router.post("/png-info", summary="A1111 png-info: the generation parameters stored in an image")
def png_info(payload: Annotated[Any, Body()] = None) -> dict[str, Any]:
    raw = _decode_image(payload.get("image") if isinstance(payload, dict) else payload, ("body", "image"))
    with Image.open(io.BytesIO(raw)) as image:
        items = {key: value for key, value in image.info.items() if isinstance(value, str)}
    text = items.pop("parameters", "")
    parsed = parse_infotext(text) if text else None
    parameters = ({"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params}
                  if parsed else {})
    return {"info": text, "items": items, "parameters": parameters}
