"""A1111's list and housekeeping endpoints under /sdapi/v1, in A1111's shapes (modules/api/models.py): real content
where sdart has it (models, samplers, schedule types, VAEs, prompt styles, memory), empty lists where it has none
(face restorers, Real-ESRGAN models, hypernetworks, scripts).

Clients never see server paths: a VAE's `filename` is its name in the VAE folder.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from sdart.models.vaes import find_vaes
from sdart.sampling.samplers import SAMPLERS, SCHEDULE_TYPES
from sdart.server.a1111_options import NOT_APPLIED_HEADER, StateDep
from sdart.server.admission import Server
from sdart.server.catalog import title
from sdart.server.native import get_server
from sdart.speed.memory import release_freed_memory

router = APIRouter()
ServerDep = Annotated[Server, Depends(get_server)]


@router.get("/sd-models", summary="A1111 checkpoint list")
def sd_models(server: ServerDep) -> list[dict[str, Any]]:
    return [{"title": title(e), "model_name": e.name, "hash": e.hash, "sha256": None, "filename": e.name,
             "config": None} for e in server.catalog.entries()]


@router.post("/refresh-checkpoints", summary="A1111: read the checkpoint list again (sdart reads it on each call)")
def refresh_checkpoints() -> None:
    return None


@router.get("/sd-vae", summary="A1111 VAE list: the VAE folder (vae_dir)")
def sd_vae(server: ServerDep) -> list[dict[str, str]]:
    return [{"model_name": name, "filename": name} for name in find_vaes(server.settings.vae_dir)]


@router.get("/sd-modules", summary="Forge's module list (VAEs and text encoders): the VAE folder")
def sd_modules(server: ServerDep) -> list[dict[str, str]]:
    return sd_vae(server)


@router.post("/refresh-vae", summary="A1111: read the VAE folder again (sdart reads it on each call)")
def refresh_vae() -> None:
    return None


@router.get("/samplers", summary="A1111 sampler list (an alias says what it runs as in `options`)")
def samplers() -> list[dict[str, Any]]:
    return [{"name": s.name, "aliases": list(s.aliases), "options": s.api_options()} for s in SAMPLERS]


@router.get("/schedulers", summary="A1111 schedule types")
def schedulers() -> list[dict[str, Any]]:
    return [{"name": t.name, "label": t.label, "aliases": list(t.aliases) or None, "default_rho": t.default_rho,
             "need_inner_model": t.needs_model_sigmas} for t in SCHEDULE_TYPES.values()]


@router.get("/prompt-styles", summary="A1111 prompt styles: styles.csv (styles_file)")
def prompt_styles(state: StateDep) -> list[dict[str, str]]:
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in state.styles.styles().values()]


@router.get("/scripts", summary="A1111 script list (sdart has none)")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


def _none() -> list[dict[str, Any]]:
    return []


# Lists of what sdart has none of, in A1111's routes: each answers [].
for _path, _what in (("script-info", "script details"), ("extensions", "extensions"),
                     ("face-restorers", "face restorers"), ("realesrgan-models", "Real-ESRGAN models"),
                     ("hypernetworks", "hypernetworks")):
    router.add_api_route(f"/{_path}", _none, methods=["GET"], summary=f"A1111 {_what} (sdart has none)")


@router.get("/memory", summary="A1111 memory figures: this process's RAM, and CUDA's when there is a GPU")
def memory() -> dict[str, Any]:
    import psutil
    import torch

    process = psutil.Process(os.getpid())
    rss, total = process.memory_info().rss, psutil.virtual_memory().total
    ram = {"free": total - rss, "used": rss, "total": total}
    if not torch.cuda.is_available():
        return {"ram": ram, "cuda": {"error": "unavailable"}}
    free, device_total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(name: str) -> dict[str, int]:
        return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

    cuda = {"system": {"free": free, "used": device_total - free, "total": device_total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"), "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
    return {"ram": ram, "cuda": cuda}


@router.post("/unload-checkpoint", summary="A1111 unload: sdart keeps the model loaded and returns freed memory")
def unload_checkpoint(server: ServerDep) -> Response:
    """A queue server's next job would pay for a reload, so the weights stay; memory the last job freed is handed
    back (to the OS, and CUDA's cache). Said in the `X-Sdart-Not-Applied` header."""
    server.worker.with_engine(lambda engine: _release(engine))
    return Response("{}", media_type="application/json",
                    headers={NOT_APPLIED_HEADER: "unload-checkpoint (the model stays loaded; freed memory returned)"})


@router.post("/reload-checkpoint", summary="A1111 reload: the model is loaded already")
def reload_checkpoint() -> dict[str, Any]:
    return {}


def _release(engine) -> None:
    import torch

    release_freed_memory()
    if engine.device.type == "cuda":
        torch.cuda.empty_cache()
