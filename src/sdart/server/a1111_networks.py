"""A1111's extra-network listings under /sdapi/v1: the LoRA folder (`/loras`, `/refresh-loras`), in the shapes of
A1111's built-in Lora extension (`extensions-builtin/Lora/scripts/lora_script.py`), and the embeddings folder
(`/embeddings`, `/refresh-embeddings`, as A1111's modules/api/api.py answers them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sdart.server.errors import FieldErrors
from sdart.server.native import ServerDep

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])


@router.get("/loras", summary="A1111 LoRA list: name, alias, path and metadata of each file in the LoRA folder")
def loras(server: ServerDep) -> list[dict[str, Any]]:
    return server.engine.lora_folder.listing()


@router.post("/refresh-loras", summary="A1111 refresh-loras: list the LoRA folder again")
def refresh_loras(server: ServerDep) -> None:
    server.engine.lora_folder.refresh()


@router.get("/embeddings", summary="A1111 embedding list: `loaded` (fit the loaded model) and `skipped`, each with "
            "step, sd_checkpoint, sd_checkpoint_name, shape and vectors")
def embeddings(server: ServerDep) -> dict[str, Any]:
    listing = getattr(server.engine, "embeddings", None)
    if listing is None:  # Ray Serve: the model, and so which files fit it, lives in the replicas
        raise FieldErrors.one(("path",), "/sdapi/v1/embeddings", "not listed when generation runs on Ray Serve "
                              "replicas; the embeddings folder is still used", status=501)
    return listing().api()


@router.post("/refresh-embeddings", summary="A1111 refresh-embeddings: the folder is read again whenever it changes")
def refresh_embeddings(server: ServerDep) -> None:
    return None
