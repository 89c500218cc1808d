"""Model references → ModelSpec: builtin:NAME, a diffusers folder, a single-file checkpoint or a hub id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdart.models.errors import ModelLoadError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


BUILTIN_DIR = Path(__file__).parent.parent / "builtin"


_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


SourceKind = Literal["builtin", "folder", "single_file", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model reference."""

    reference: str
    source: SourceKind
    location: str  # folder or file path, or hub id
    config_dir: Path | None = None  # configs for a single-file checkpoint (offline use)

    @property
    def name(self) -> str:
        """The short name A1111 writes as `Model:` (file stem, folder name or hub id)."""
        if self.source == "hub":
            return self.location
        if self.source == "builtin":
            return self.reference
        return Path(self.location).stem if self.source == "single_file" else Path(self.location).name


def builtin_models() -> list[str]:
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "model_index.json").is_file())


def resolve(reference: str, config_dir: str | Path | None = None) -> ModelSpec:
    """Classify a model reference without loading it; ModelLoadError when it can't be a model."""
    ref = reference.strip()
    if not ref:
        raise ModelLoadError("invalid", "model = '': give a hub id (org/name), a local folder or a checkpoint file")
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        folder = BUILTIN_DIR / name
        if not (folder / "model_index.json").is_file():
            known = ", ".join(f"builtin:{n}" for n in builtin_models()) or "none installed"
            raise ModelLoadError("not_found", f"model = {ref!r}: no such built-in model (available: {known}).")
        return ModelSpec(ref, "builtin", str(folder))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                "not_a_model",
                f"model = {ref!r}: this folder is not a diffusers model (it has no model_index.json). Point to the "
                "folder that holds model_index.json, or to a single .safetensors/.ckpt checkpoint file.",
            )
        return ModelSpec(ref, "folder", str(path))
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                "not_a_model",
                f"model = {ref!r}: not a checkpoint file (expected one of {', '.join(SINGLE_FILE_SUFFIXES)}).",
            )
        config = Path(config_dir).expanduser() if config_dir else None
        if config is not None and not (config / "model_index.json").is_file():
            raise ModelLoadError(
                "not_a_model", f"model_config_dir = {str(config)!r}: not a diffusers folder (no model_index.json)."
            )
        return ModelSpec(ref, "single_file", str(path), config_dir=config)
    is_hub_id = _HUB_ID.match(ref) and not ref.startswith((".", "~")) and path.suffix.lower() not in SINGLE_FILE_SUFFIXES
    if not is_hub_id:
        raise ModelLoadError(
            "missing_file",
            f"model = {ref!r}: no such file or folder, and it is not a hub id of the form org/name.",
        )
    return ModelSpec(ref, "hub", ref)
