"""The A1111-compatible API under /sdapi/v1, run through the same queue as the native API.

Field names, defaults and response shapes follow A1111's modules/api/models.py and api.py, so existing clients
(the `webuiapi` library, scripts, editor plug-ins, bots) work unchanged. Reading a payload (a1111_payload), the
settings (a1111_options) and the lists (a1111_lists) live beside this module; here are generation, progress,
interrupt and png-info. Whatever a request asks that sdart does not do is said in its answer (`info` →
`extra_generation_params` → `sdart: not applied`), never dropped silently.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from sdart.images.infotext import parse_infotext, read_infotext
from sdart.models.vaes import find_vaes
from sdart.server import a1111_lists, a1111_options
from sdart.server.a1111_options import StateDep
from sdart.server.a1111_payload import Context, Reading, echoed_parameters, json_body, read_payload, read_picture
from sdart.server.admission import Server, submit
from sdart.server.errors import FieldErrors
from sdart.server.native import find_job, get_server
from sdart.server.store import ImageRecord, Job

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])
ServerDep = Annotated[Server, Depends(get_server)]
JSON_BODY = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}, "required": True}}


def _context(server: Server, state: a1111_options.A1111State) -> Context:
    def find_model(name: str) -> str | None:
        entry = server.catalog.find(name)
        return entry.name if entry else None

    return Context(state.request_defaults(), state.checkpoint, state.styles.styles(), find_model,
                   find_vaes(server.settings.vae_dir))


async def _queue(server: Server, state: a1111_options.A1111State, payload: dict, reading: Reading) -> Job:
    """Queue the request; the LoRA tags it names that the LoRA folder lacks join what is not applied (A1111 draws
    without them too)."""
    job = await run_in_threadpool(partial(submit, server, reading.request, "a1111", not_applied=reading.not_applied))
    overrides = payload.get("override_settings")
    if isinstance(overrides, dict) and payload.get("override_settings_restore_afterwards") is False:
        state.persist(server, overrides, reading.overridden)
    return job


@router.post("/txt2img", summary="A1111 txt2img: queue a job and answer when it is done", openapi_extra=JSON_BODY)
async def txt2img(request: Request, server: ServerDep, state: StateDep) -> dict[str, Any]:
    payload = await json_body(request)
    reading = read_payload(payload, _context(server, state))
    job = await _queue(server, state, payload, reading)
    return await _answer(server, payload, reading, job, img2img=False)


@router.post("/img2img", summary="A1111 img2img: redraw init_images[0] after the prompt; answers when done",
             openapi_extra=JSON_BODY)
async def img2img(request: Request, server: ServerDep, state: StateDep) -> dict[str, Any]:
    """`init_images` (base64, the first is used for every image), `denoising_strength` (0.75), `resize_mode`
    (0 just resize, 1 crop and resize, 2 resize and fill) and txt2img's fields; inpainting with `mask` (white =
    redraw), `mask_blur` (4) and `inpainting_mask_invert`."""
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, "must be a JSON object of img2img fields")
    images = payload.get("init_images")
    if not isinstance(images, list) or not images:
        raise FieldErrors.one(("body", "init_images"), images, "must be a list of base64-encoded images")
    # Decoded once, here: the request and the stored upload read the bytes the data: URL carries.
    picture = read_picture(images[0], ("body", "init_images", "0"))
    mask = read_picture(payload["mask"], ("body", "mask")) if payload.get("mask") else None
    reading = read_payload(payload, _context(server, state), img2img=True, init_image=picture, mask=mask)
    job = await _queue(server, state, payload, reading)
    return await _answer(server, payload, reading, job, img2img=True)


async def _answer(server: Server, payload: dict, reading: Reading, job: Job, *, img2img: bool) -> dict[str, Any]:
    """Wait for `job` and answer as A1111 does: A1111 blocks until the images exist; so do we, but the job runs
    in the queue like any other. An interrupted job answers with what it made (A1111 decodes the batch it was on)."""
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
    info = _info(server, job.request, records, job.status == "cancelled", reading)
    return {"images": images, "parameters": echoed_parameters(payload, img2img=img2img), "info": json.dumps(info)}


async def _until_done(queue: asyncio.Queue) -> None:
    while (await queue.get())["event"] != "done":
        pass


def _b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _info(server: Server, request: Any, records: list[ImageRecord], interrupted: bool, reading: Reading) -> dict[str, Any]:
    """A1111's `Processed.js()` fields that clients read."""
    seeds = [r.seed for r in records]
    subseeds = [request.image_seeds(r.position)[1] for r in records]  # A1111: each image's variation seed
    return {
        "prompt": request.prompt, "all_prompts": [request.prompt] * len(records),
        "negative_prompt": request.negative_prompt, "all_negative_prompts": [request.negative_prompt] * len(records),
        "seed": seeds[0] if seeds else request.seed, "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else request.subseed, "all_subseeds": subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width, "height": request.height, "sampler_name": request.sampler_name,
        "scheduler": request.scheduler, "cfg_scale": request.cfg_scale, "steps": request.steps,
        "batch_size": request.batch_size, "clip_skip": request.clip_skip, "restore_faces": False,
        "sd_model_name": server.engine.model.spec.name, "sd_model_hash": server.engine.model.hash,
        "seed_resize_from_w": request.seed_resize_from_w, "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": request.denoising_strength if request.init_image or request.enable_hr else None,
        "extra_generation_params": reading.extra_generation_params(), "index_of_first_image": 0,
        "infotexts": [r.infotext for r in records], "styles": reading.styles, "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "is_using_inpainting_conditioning": False,
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


@router.post("/interrupt", summary="A1111 interrupt: end the running batch at this step, keep its picture, stop")
def interrupt(server: ServerDep) -> dict[str, Any]:
    server.worker.finish_running_batch(stop=True)
    return {}


@router.post("/skip", summary="A1111 skip: end the running batch at this step, keep its picture, go on")
def skip(server: ServerDep) -> dict[str, Any]:
    server.worker.finish_running_batch(stop=False)
    return {}


@router.post("/png-info", summary="A1111 png-info: the generation parameters stored in an image",
             openapi_extra=JSON_BODY)
async def png_info(request: Request) -> dict[str, Any]:
    """PNG `parameters` text, or a JPEG/WebP's EXIF UserComment, as A1111 reads them; `parameters` is the parsed
    text with A1111's `Size-1`/`Size-2` halves beside every `WxH` value."""
    payload = await json_body(request)
    picture = read_picture(payload.get("image") if isinstance(payload, dict) else payload, ("body", "image"))
    try:
        with Image.open(io.BytesIO(picture.raw)) as image:
            items = {key: value for key, value in image.info.items() if isinstance(value, str)}
            text = read_infotext(image) or ""
    except (OSError, ValueError) as exc:
        raise FieldErrors.one(("body", "image"), None, f"not a readable image ({exc})") from None
    items.pop("parameters", None)
    parsed = parse_infotext(text) if text else None
    parameters: dict[str, Any] = {}
    if parsed:
        parameters = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params}
        for key, value in parsed.params.items():
            if (size := re.fullmatch(r"(\d+)x(\d+)", value)) is not None:
                parameters[f"{key}-1"], parameters[f"{key}-2"] = size.group(1), size.group(2)
    return {"info": text, "items": items, "parameters": parameters}


router.include_router(a1111_options.router)
router.include_router(a1111_lists.router)
