"""Switching the loaded model (native API): refused while jobs run or wait, so that no queued job finds a
different model than the one it was queued for; announced on the server's event stream while it loads."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from sdart.engine import Engine
from sdart.models.errors import ModelLoadError
from sdart.server.admission import Server
from sdart.server.errors import FieldErrors
from sdart.server.native import ServerDep

router = APIRouter(prefix="/api/v1")


class ModelChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=500, description="a name from GET /api/v1/models")


@router.post("/model", summary="Load another model (refused with 409 while jobs run or wait)")
def switch_model(choice: ModelChoice, server: ServerDep) -> dict[str, Any]:
    """Answers when the model is loaded: {"name", "switched", "load_s"}. A job may also name its own `model`;
    this switch is for clients that, like A1111's model picker, change the model every later job uses."""
    entry = server.catalog.find(choice.name)
    if entry is None:
        raise FieldErrors.one(("body", "name"), choice.name,
                              f"unknown model; this server has: {', '.join(server.catalog.names())}")
    _refuse_if_busy(server, choice.name)
    if entry.loaded:
        return {"name": entry.name, "switched": False, "load_s": 0.0}

    def load(engine: Engine) -> float:
        _refuse_if_busy(server, choice.name)  # again, holding the engine: a job may have been queued meanwhile
        server.hub.broadcast({"event": "model", "state": "loading", "name": entry.name})
        started = time.perf_counter()
        engine.load(entry.reference)
        return time.perf_counter() - started

    try:
        load_s = server.worker.with_engine(load)
    except ModelLoadError as exc:
        server.hub.broadcast({"event": "model", "state": "failed", "name": entry.name, "error": str(exc)})
        raise FieldErrors.one(("body", "name"), choice.name, str(exc)) from None
    server.hub.broadcast({"event": "model", "state": "loaded", "name": entry.name})
    return {"name": entry.name, "switched": True, "load_s": round(load_s, 2)}


def _refuse_if_busy(server: Server, name: str) -> None:
    counts = server.store.counts()
    busy = counts["running"] + counts["queued"]
    if busy:
        raise FieldErrors.one(("body", "name"), name, f"{counts['running']} job(s) running and {counts['queued']} "
                              "waiting; switch models when the queue is empty (or name the model in the job)",
                              status=409)
