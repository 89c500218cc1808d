"""Loading errors → one-paragraph explanations: diffusers wraps hub errors in plain OSError/ValueError; the cause is down the chain."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # resolve raises ModelLoadError, so it is imported here for annotations only
    from sdart.models.resolve import ModelSpec

MOVED_MODELS = {
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}


class ModelLoadError(Exception):
    """A model that could not be loaded. `kind` says why; str() is a message for the user."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_offline(exc: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled))


def classify_error(exc: BaseException, spec: ModelSpec) -> ModelLoadError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    ref = spec.reference
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, GatedRepoError):
            return ModelLoadError(
                "gated",
                f"Model {ref!r} is gated: its licence must be accepted on https://huggingface.co/{spec.location} "
                "while logged in, and this machine must send that account's token. Create a read token at "
                "https://huggingface.co/settings/tokens and set HF_TOKEN (in the environment or in a .env file "
                "here), or run `hf auth login`.",
            )
    for e in chain:
        if isinstance(e, RepositoryNotFoundError):
            moved = MOVED_MODELS.get(spec.location)
            hint = f" It has moved: use --model {moved}." if moved else " Check the spelling (org/name), or, for a private repo, set HF_TOKEN."
            return ModelLoadError("not_found", f"Model {ref!r} was not found on the Hugging Face hub.{hint}")
        if isinstance(e, RevisionNotFoundError):
            return ModelLoadError("not_found", f"Model {ref!r}: the requested revision does not exist on the hub.")
    for e in chain:
        if _is_offline(e) or isinstance(e, ConnectionError) or type(e).__name__ in ("ConnectError", "ConnectTimeout"):
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            why = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the hub could not be reached"
            if spec.source == "single_file":
                return ModelLoadError(
                    "offline",
                    f"Checkpoint {ref!r} needs its model configs, which are not cached and {why}. Pass "
                    "--model-config DIR (or SDART_MODEL_CONFIG_DIR), a local diffusers folder of the same "
                    "architecture (SD 1.x, SD 2.x or SDXL), or connect once to cache them.",
                )
            return ModelLoadError(
                "offline",
                f"Model {ref!r} is not in the local cache and {why}. Connect once to download it (it is then "
                "cached under HF_HOME), or use a local model: --model PATH to a diffusers folder or a "
                ".safetensors checkpoint, or --model builtin:shapes for the bundled demo model.",
            )
    for e in chain:
        if isinstance(e, HfHubHTTPError):
            return ModelLoadError("hub", f"Model {ref!r}: the hub answered with an error: {e}")
    text = " ".join(str(e) for e in chain).lower()
    corrupt_signs = ("deserializ", "header", "incomplete", "invalid load key", "unpickling", "truncated",
                     "unexpected eof", "ran out of input", "pytorchstreamreader", "not a zip", "metadata")
    if any(type(e).__name__ == "SafetensorError" for e in chain) or any(s in text for s in corrupt_signs):
        return ModelLoadError(
            "corrupt",
            f"Model {ref!r}: a weights file is corrupt or incomplete ({first_line(exc)}). Delete it and download "
            "it again (for hub models: remove its folder under the HF cache, or `hf cache delete`).",
        )
    return ModelLoadError(
        "invalid",
        f"Model {ref!r} could not be loaded as a Stable Diffusion text-to-image model: {first_line(exc)}",
    )


def first_line(exc: BaseException) -> str:
    """`Type: first line` of the deepest cause: a one-line reason for an error message."""
    root = list(_chain(exc))[-1]
    text = str(root).strip().splitlines()
    return f"{type(root).__name__}: {text[0] if text else ''}".strip()
