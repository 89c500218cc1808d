"""A1111's extra-network listings under /sdapi/v1: the LoRA folder (`/loras`, `/refresh-loras`), in the shapes of
A1111's built-in Lora extension (`extensions-builtin/Lora/scripts/lora_script.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sdart.server.native import ServerDep

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])


@router.get("/loras", summary="A1111 LoRA list: name, alias, path and metadata of each file in the LoRA folder")
def loras(server: ServerDep) -> list[dict[str, Any]]:
    return server.engine.lora_folder.listing()


@router.post("/refresh-loras", summary="A1111 refresh-loras: list the LoRA folder again")
def refresh_loras(server: ServerDep) -> None:
    server.engine.lora_folder.refresh()
