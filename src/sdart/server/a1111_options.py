"""A1111's settings under /sdapi/v1: `GET /options` (A1111's every key, sdart's real values for those it uses),
`POST /options` (takes the whole dict back, applies what sdart knows, says what it does not), `/cmd-flags`.

The settings a client posts are kept for the server's life (as A1111 keeps them in config.json), so a client reads
back what it wrote; the ones that set a request field (`CLIP_stop_at_last_layers` → clip_skip, and any field another
change adds under a setting's name) are the defaults of later /sdapi/v1 requests.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from sdart import a1111_fields
from sdart.models.errors import ModelLoadError
from sdart.models.vaes import OWN_VAE, find_vaes
from sdart.request import GenerationRequest, RequestError
from sdart.server.a1111_payload import json_body
from sdart.server.a1111_styles import StyleFile
from sdart.server.admission import Server
from sdart.server.catalog import title
from sdart.server.errors import FieldErrors
from sdart.server.native import get_server

log = logging.getLogger(__name__)
router = APIRouter()
ServerDep = Annotated[Server, Depends(get_server)]
NOT_APPLIED_HEADER = "X-Sdart-Not-Applied"
_STATE_LOCK = threading.Lock()


class A1111State:
    """What the A1111 API keeps between requests: the settings clients posted, and the styles file."""

    def __init__(self, server: Server):
        self.posted: dict[str, Any] = {}
        self.styles = StyleFile(server.settings.styles_file or server.settings.data_dir / "styles.csv")
        self.lock = threading.Lock()
        # A1111's selected checkpoint: what a request without a checkpoint override runs on (a request that
        # overrides it runs on its own and, as A1111 restores settings afterwards, the next one comes back).
        self.checkpoint = next(entry.name for entry in server.catalog.entries() if entry.loaded)

    def persist(self, server: Server, overrides: dict[str, Any], fields: dict[str, Any]) -> None:
        """override_settings_restore_afterwards=false: the request's overrides stay, as A1111 keeps them."""
        known = a1111_fields.a1111_options()
        with self.lock:
            self.posted.update({k: v for k, v in overrides.items() if k in known and k not in ("sd_model_checkpoint",
                                                                                                  "sd_vae")})
            if fields.get("model"):
                self.checkpoint = fields["model"]
        if "vae" in fields:
            vaes = find_vaes(server.settings.vae_dir)
            server.engine.default_vae = None if fields["vae"] in OWN_VAE else str(vaes[fields["vae"]])

    def request_defaults(self) -> dict[str, Any]:
        """Request fields the posted settings set (the checkpoint and VAE are the engine's own, not defaults)."""
        with self.lock:
            fields, _ = a1111_fields.options_to_fields(self.posted)
        return {name: value for name, value in fields.items() if name not in ("model", "vae")}


def get_state(request: Request) -> A1111State:
    with _STATE_LOCK:
        if getattr(request.app.state, "a1111", None) is None:
            request.app.state.a1111 = A1111State(request.app.state.server)
        return request.app.state.a1111


StateDep = Annotated[A1111State, Depends(get_state)]


def vae_name(server: Server) -> str:
    """The engine's VAE as A1111 names it: a file name, or "Automatic" for the model's own."""
    reference = server.engine.default_vae
    return Path(reference).name if reference else "Automatic"


def live_options(server: Server, state: A1111State) -> dict[str, Any]:
    """The settings whose value sdart decides: what it does, whatever was posted."""
    selected = server.catalog.find(state.checkpoint) or next(e for e in server.catalog.entries() if e.loaded)
    return {
        "sd_model_checkpoint": title(selected), "sd_checkpoint_hash": selected.hash or "", "sd_vae": vae_name(server),
        "samples_format": "png", "samples_save": True, "enable_pnginfo": True, "add_model_hash_to_info": True,
        "add_model_name_to_info": True, "add_vae_name_to_info": True, "add_vae_hash_to_info": False,
        "add_version_to_infotext": True, "add_user_name_to_info": False, "sd_checkpoints_limit": 1,
        "randn_source": "CPU" if server.settings.rng == "cpu" else "GPU", "live_previews_enable": True,
        "show_progress_type": "Approx cheap", "live_preview_content": "Combined",
    }


@router.get("/options", summary="A1111 settings: every key A1111 has, sdart's values for those it uses")
def get_options(server: ServerDep, state: StateDep) -> dict[str, Any]:
    with state.lock:
        posted = dict(state.posted)
    return {**a1111_fields.a1111_options(), "CLIP_stop_at_last_layers": 1, **posted, **live_options(server, state)}


@router.post("/options", summary="A1111 settings: applies what sdart knows (checkpoint, VAE, request defaults)")
async def set_options(request: Request, server: ServerDep, state: StateDep) -> Response:
    """Clients post back the whole dict they read: unchanged values are fine. `sd_model_checkpoint` switches the
    model and `sd_vae` the VAE (after the running job); settings that set a request field become the defaults of
    later requests; the rest are kept and read back. Whatever does not change what sdart does is named in the
    `X-Sdart-Not-Applied` header."""
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, "must be a JSON object of option: value")
    current = get_options(server, state)
    live = live_options(server, state)
    known = a1111_fields.a1111_options()
    _check_request_fields(payload)
    not_applied = [key for key, value in payload.items() if not _applies(key, value, current, known)]
    if "sd_model_checkpoint" in payload and payload["sd_model_checkpoint"] is not None:
        state.checkpoint = await _switch_model(server, payload["sd_model_checkpoint"])
    if payload.get("sd_vae") is not None and payload["sd_vae"] != current["sd_vae"]:
        await _switch_vae(server, payload["sd_vae"])
    with state.lock:
        state.posted.update({key: value for key, value in payload.items() if key in known and key not in live})
    headers = {}
    if not_applied:
        log.warning("sdapi options not applied: %s", ", ".join(not_applied))
        headers[NOT_APPLIED_HEADER] = ", ".join(not_applied)[:2000]
    return Response("null", media_type="application/json", headers=headers)


def _applies(key: str, value: Any, current: dict[str, Any], known: dict[str, Any]) -> bool:
    """Whether posting `key: value` changes what sdart does as asked (or asks no change)."""
    if key not in known:
        return False  # not an A1111 setting
    if key in ("sd_model_checkpoint", "sd_vae") or a1111_fields.option_field(key) is not None:
        return True  # switched, or a request default
    return value == current.get(key)  # a value sdart decides, or one it only keeps: fine only unchanged


def _check_request_fields(payload: dict[str, Any]) -> None:
    """Settings that set a request field must hold a value the request takes; FieldErrors name the setting."""
    errors = []
    for key, value in payload.items():
        name = a1111_fields.option_field(key)
        if name is None or name in ("model", "vae") or value is None:
            continue
        try:
            GenerationRequest.parse({name: value})
        except RequestError as exc:
            errors += [(("body", key), value, message) for _, _, message in exc.errors]
    if errors:
        raise FieldErrors(errors)


async def _switch_model(server: Server, name: Any) -> str:
    """Load the model `name` names (after the running job); returns its catalog name."""
    from starlette.concurrency import run_in_threadpool

    entry = server.catalog.find(name) if isinstance(name, str) else None
    if entry is None:
        raise FieldErrors.one(("body", "sd_model_checkpoint"), name,
                              f"unknown model; this server has: {', '.join(server.catalog.names())}")
    if not entry.loaded:
        try:
            # Waits for the running job: the worker and this switch take turns on the engine.
            await run_in_threadpool(server.worker.with_engine, lambda engine: engine.load(entry.reference))
        except ModelLoadError as exc:
            raise FieldErrors.one(("body", "sd_model_checkpoint"), name, str(exc)) from None
    return entry.name


async def _switch_vae(server: Server, name: Any) -> None:
    from starlette.concurrency import run_in_threadpool

    vaes = find_vaes(server.settings.vae_dir)
    if not isinstance(name, str) or (name not in OWN_VAE and name not in vaes):
        raise FieldErrors.one(("body", "sd_vae"), name, f"unknown VAE; this server has: "
                                                        f"{', '.join([*OWN_VAE[:2], *vaes])} (vae_dir)")
    reference = None if name in OWN_VAE else str(vaes[name])

    def switch(engine) -> None:
        engine.default_vae = reference
        engine.use_vae(reference)

    try:
        await run_in_threadpool(server.worker.with_engine, switch)
    except ModelLoadError as exc:
        raise FieldErrors.one(("body", "sd_vae"), name, str(exc)) from None


@router.get("/cmd-flags", summary="A1111 command-line flags: A1111's every flag, sdart's settings where they match")
def cmd_flags(server: ServerDep) -> dict[str, Any]:
    settings = server.settings
    flags = json.loads((a1111_fields.DATA_DIR / "cmd_flags.json").read_text())["flags"]
    # Paths and the API key stay on the server: clients never see them.
    return {**flags, "api": True, "nowebui": False, "listen": settings.host not in ("127.0.0.1", "localhost", "::1"),
            "server_name": None, "port": settings.port, "api_auth": None, "lowvram": settings.memory == "minimal",
            "medvram": settings.memory == "low", "no_half": settings.dtype == "float32",
            "precision": "full" if settings.dtype == "float32" else "autocast",
            "use_cpu": ["all"] if server.engine.device.type == "cpu" else [],
            "cors_allow_origins": ",".join(settings.cors_origins) or None, "hide_ui_dir_config": True}
