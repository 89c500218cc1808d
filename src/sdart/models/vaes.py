"""Replacement VAEs found by name in a VAE folder (A1111's models/VAE): single files (`*.safetensors`, `*.pt`,
`*.ckpt`, `*.bin`) or diffusers folders (a `config.json` beside the weights).

A single-file VAE carries no config; it takes the loaded model's VAE config (A1111 puts it into the model's VAE the
same way), and diffusers' `from_single_file` converts A1111/LDM key names.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sdart.models.errors import ModelLoadError, first_line

VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
# A1111's `sd_vae` values that mean "the model's own VAE".
OWN_VAE = ("Automatic", "None", "")


def find_vaes(folder: Path | None) -> dict[str, Path]:
    """The VAEs in `folder` by the name clients use (a file's name, a folder's name), sorted; {} without one."""
    if folder is None or not Path(folder).is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix.lower() in VAE_SUFFIXES:
            found[path.name] = path
        elif path.is_dir() and (path / "config.json").is_file():
            found[path.name] = path
    return found


def is_vae_file(reference: str) -> bool:
    path = Path(reference)
    return path.suffix.lower() in VAE_SUFFIXES and path.is_file()


def load_vae_file(path: str | Path, like: Any, dtype: Any) -> Any:
    """A single-file VAE built with the config of `like` (the model's own VAE); ModelLoadError names the file."""
    from diffusers import AutoencoderKL

    try:
        with tempfile.TemporaryDirectory() as config:
            like.save_config(config)
            return AutoencoderKL.from_single_file(str(path), config=config, torch_dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - a wrong or damaged file shows as any of several errors
        raise ModelLoadError("invalid", f"vae = {Path(path).name!r}: not a VAE for this model ({first_line(exc)})") from exc
