"""Connecting to Ray (optional: `pip install 'sdart[ray]'`, so `ray` is imported only inside functions), and
building an Engine from settings shipped to another process. The batch and server front ends each have their
Ray part (`sdart.batch.ray`, `sdart.server.ray`) on top of this."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdart.settings import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed; install it with: pip install 'sdart[ray]'"
SERVE_APP = "sdart"
MODEL_DEPLOYMENT = "ModelReplica"


class RayMissing(RuntimeError):
    """`--ray` was asked for but Ray is not installed."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


# --- connecting ----------------------------------------------------------------------------------------------


@contextmanager
def ray_session(address: str = "auto", **init_kwargs: Any) -> Iterator[Any]:
    """Connect to Ray for the duration of the block.

    `auto`: the cluster named by RAY_ADDRESS or started by `ray start`, else a new local one; `local`: a new
    local cluster; anything else: an address (`host:6379`, `ray://host:10001`). A session already open in this
    process (a notebook, the tests) is used as is and left open.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("log_to_driver", False)  # actor logs (model loading notes) would tear the progress bar
    if address == "local":
        ray.init(**init_kwargs)
    elif address == "auto":
        try:
            ray.init(address="auto", **init_kwargs)
        except ConnectionError:
            log.info("no running Ray cluster found; starting a local one")
            ray.init(**init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def default_gpus_per_worker() -> float:
    """1 when the cluster has GPUs, else 0: an actor asking for a GPU on a CPU-only cluster would wait forever."""
    ray = _import_ray()
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _portable_settings(settings: Settings, cpus: float | None) -> dict[str, Any]:
    """Settings as plain data for another process, with local paths made absolute (Ray workers run in their
    own working directory) and torch threads matched to the CPUs Ray gives the actor."""
    data = settings.model_dump(mode="json")
    model = Path(settings.model).expanduser()
    if model.exists():
        data["model"] = str(model.resolve())
    for name in ("model_config_dir", "data_dir", "output_dir", "cache_dir", "compile_cache_dir", "lora_dir"):
        if data.get(name):
            data[name] = str(Path(data[name]).expanduser().resolve())
    if data.get("threads") is None and cpus and cpus >= 1:
        data["threads"] = int(cpus)
    return data


def _engine(settings_data: dict[str, Any]):
    from sdart.engine import Engine
    from sdart.settings import Settings

    settings = Settings(**settings_data)
    return Engine(settings.model, settings=settings)


