"""`sdart generate --from IMAGE`: the parameters an image carries, as request fields and engine settings, and the
keys the re-run does not apply (sdart.a1111_fields: the same list the /sdapi/v1 API uses).

The image's values are not the user's typing, so what this machine lacks is stepped around and said: a model or
VAE that is not here, a sampler or schedule type sdart does not know (A1111's fallback, as when pasting in A1111).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdart.a1111_fields import SETTING_KEYS
from sdart.images.infotext import Infotext, parse_infotext, read_infotext
from sdart.models.vaes import OWN_VAE, find_vaes
from sdart.sampling.lenient import resolve_a1111

# sdart's own setting keys that --from applies when the command line does not set them (values as the engine writes).
_SETTINGS_FROM_KEYS = {"Step cache": ("step_cache", int), "Token downsampling": ("token_downsampling", int),
                       "Weights": ("quantize", str)}


@dataclass
class FromImage:
    parsed: Infotext
    fields: dict[str, Any]  # GenerationRequest fields
    settings: dict[str, Any]  # engine settings (step cache, token downsampling, int8)
    notes: list[str] = field(default_factory=list)  # keys stepped around, with why
    stepped: set[str] = field(default_factory=set)  # their keys


def read_from_image(path: Path, *, vae_dir: Path | None, sampler_given: bool) -> FromImage:
    """The request fields and settings stored in `path`; ValueError names --from when there are none."""
    if not path.is_file():
        raise ValueError(f"--from = {str(path)!r}: no such file")
    try:
        text = read_infotext(path)
    except OSError as exc:
        raise ValueError(f"--from = {str(path)!r}: not a readable image ({exc})") from None
    if not text:
        raise ValueError(f"--from = {str(path)!r}: the image carries no `parameters` text")
    parsed = parse_infotext(text)
    image = FromImage(parsed, parsed.request_fields(), {})
    if "Model" in parsed.params:
        image.fields["model"] = parsed.params["Model"]
    if not sampler_given and ("sampler_name" in image.fields or "scheduler" in image.fields):
        sampler, schedule, substituted = resolve_a1111(str(image.fields.get("sampler_name") or "") or None,
                                                       str(image.fields.get("scheduler") or "") or None)
        image.fields.update(sampler_name=sampler.name, scheduler=schedule)
        if substituted:
            image.stepped |= {"Sampler", "Schedule type"} & set(parsed.params)
            image.notes += substituted
    vae = parsed.params.get("VAE")
    if vae is not None and "vae" in image.fields:
        if vae not in OWN_VAE and vae not in find_vaes(vae_dir):
            image.fields.pop("vae")
            image.stepped.add("VAE")
    for key, (name, convert) in _SETTINGS_FROM_KEYS.items():
        if key in parsed.params:
            try:
                image.settings[name] = convert(parsed.params[key])
            except ValueError:
                pass  # an odd value is left out, and named as not applied
    return image


def drop_model(image: FromImage, field: str = "model", key: str = "Model") -> None:
    """The image's model (or refiner) is not available here: run without it (the default model), and say so."""
    image.fields.pop(field, None)
    image.stepped.add(key)


def not_applied(image: FromImage, request_fields: dict[str, Any], written: dict[str, str], rng: str) -> list[str]:
    """The image's keys this re-run does not apply: those sdart does not do, and those stepped around here.
    `written` is the infotext the re-run writes (its setting keys count as applied when they match); `rng` where
    its noise is drawn (A1111's RNG: CPU or GPU)."""
    settings = {key: written[key] for key in SETTING_KEYS if key in written}
    settings["RNG"] = "CPU" if rng == "cpu" else "GPU"
    keys = image.parsed.not_applied(request_fields, settings)
    return list(dict.fromkeys([*keys, *(key for key in image.parsed.params if key in image.stepped)]))
