"""An A1111 txt2img/img2img payload → GenerationRequest, read as leniently as A1111's own API reads it, and what goes
back: `parameters` (A1111's own fields only) and the notes of what was substituted or not applied.

Leniency is for /sdapi/v1 alone (the native API, batch and the CLI keep their errors naming the field): a JSON body
sent without a Content-Type is read as JSON; an unknown sampler or schedule type falls back as A1111's
`get_sampler_and_scheduler` does; an unknown checkpoint or VAE override is left out, as A1111 leaves it. Every
substitution and every field sdart does not apply is said in the answer (`info.extra_generation_params`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from sdart import a1111_fields
from sdart.images.infotext import parse_infotext
from sdart.images.initimage import DecodedDataUrl, decode_data_url
from sdart.models.vaes import OWN_VAE
from sdart.request import PICTURE_FIELDS, GenerationRequest, RequestError
from sdart.sampling.lenient import resolve_a1111
from sdart.server.a1111_styles import PromptStyle, apply_styles
from sdart.server.errors import FieldErrors

log = logging.getLogger(__name__)

# A1111's API defaults where GenerationRequest's differ (StableDiffusionProcessingTxt2Img / Img2Img; a missing
# sampler is `sampler_index`'s "Euler").
A1111_DEFAULTS: dict[str, Any] = {"steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512, "sampler_name": "Euler",
                                  "scheduler": "Automatic", "denoising_strength": 0.75}
NOT_APPLIED_KEY = "sdart: not applied"
SUBSTITUTED_KEY = "sdart: substituted"
# Request fields an A1111 payload cannot set directly: the model comes from override_settings, pictures from
# init_images / mask.
_NOT_FROM_PAYLOAD = frozenset({"model", "vae", *PICTURE_FIELDS})


@dataclass
class Reading:
    """A payload read: the request, and what the answer must say about it."""

    request: GenerationRequest
    styles: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)
    substituted: list[str] = field(default_factory=list)
    overridden: dict[str, Any] = field(default_factory=dict)  # request fields override_settings set (applied)

    def extra_generation_params(self) -> dict[str, str]:
        notes = {SUBSTITUTED_KEY: "; ".join(self.substituted), NOT_APPLIED_KEY: ", ".join(self.not_applied)}
        return {key: text for key, text in notes.items() if text}


@dataclass(frozen=True)
class Context:
    """What reading a payload needs from the server: settings that act as defaults, styles, model and VAE names."""

    option_fields: Mapping[str, Any]  # request fields set by /options (CLIP_stop_at_last_layers → clip_skip, …)
    checkpoint: str  # A1111's selected checkpoint: the model of a request that does not override it
    styles: Mapping[str, PromptStyle]
    find_model: Callable[[str], str | None]  # a checkpoint title/name → the name the catalog knows, or None
    vaes: Mapping[str, Any]  # the VAE folder's names


async def json_body(request: Request) -> Any:
    """The request body as JSON, with or without a Content-Type (A1111's API reads both); non-finite numbers
    (`NaN`, `-1e309`), which JSON has no place for, are refused by the path of the value."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.split(";")[0]:
        raise FieldErrors.one(("body",), content_type, "send the body as JSON (Content-Type: application/json)",
                              status=415)
    return parse_json(body)


class _NonFinite(str):
    """A number JSON cannot hold, kept as its text until its place is known."""


def _finite_float(text: str) -> float | _NonFinite:
    number = float(text)
    return number if math.isfinite(number) else _NonFinite(text)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        value = json.loads(body.decode("utf-8-sig"), parse_float=_finite_float, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise FieldErrors.one(("body",), None, f"not valid JSON ({exc.msg}) at character {exc.pos}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # not UTF-8; an integer of 4300+ digits; depth
        raise FieldErrors.one(("body",), None, f"not a JSON document sdart can read ({type(exc).__name__})") from None
    bad = list(_non_finite(value, ()))
    if bad:
        raise FieldErrors([(("body", *path), str(text), "must be a finite number (JSON has no NaN or infinity)")
                           for path, text in bad])
    return value


def _non_finite(value: Any, path: tuple[str, ...]):
    if isinstance(value, _NonFinite):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, str(index)))


def read_picture(value: Any, location: tuple[str, ...]) -> DecodedDataUrl:
    """An A1111 base64 picture (bare or a data: URL) decoded, as the data: URL a request takes with its bytes;
    FieldErrors name A1111's field (`location`) when it is no picture."""
    if not isinstance(value, str) or not value:
        raise FieldErrors.one(location, value, "must be a base64-encoded image (optionally a data: URL)")
    try:
        return decode_data_url(value)
    except ValueError as exc:
        raise FieldErrors.one(location, value, str(exc)) from None


def read_payload(payload: Any, context: Context, *, img2img: bool = False, init_image: str | None = None,
                 mask: str | None = None) -> Reading:
    """An A1111 payload → the request to queue; FieldErrors name the A1111 field that is wrong."""
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, f"must be a JSON object of {'img2img' if img2img else 'txt2img'} "
                                                  "fields")
    # 1. The payload's own fields (None means "A1111's default"), over A1111's defaults and the /options settings.
    reading = Reading(GenerationRequest())
    fields: dict[str, Any] = {**A1111_DEFAULTS, **context.option_fields, "model": context.checkpoint}
    given = {name: value for name, value in payload.items() if value is not None}
    # 2. `infotext`: its parameters fill the fields the payload leaves out (A1111's apply_infotext).
    infotext = given.get("infotext")
    if isinstance(infotext, str) and infotext.strip():
        parsed = parse_infotext(infotext)
        from_text = {k: v for k, v in parsed.request_fields().items() if k not in given and (v or k != "prompt")}
        model = parsed.params.get("Model")
        if model and "sd_model_checkpoint" not in (given.get("override_settings") or {}):
            given["override_settings"] = {**(given.get("override_settings") or {}), "sd_model_checkpoint": model}
        fields.update({k: v for k, v in from_text.items() if k not in _NOT_FROM_PAYLOAD})
        reading.not_applied += parsed.not_applied({**fields, **given})
    request_names = set(GenerationRequest.model_fields) - _NOT_FROM_PAYLOAD
    fields.update({name: value for name, value in given.items() if name in request_names})
    # 3. Sampler and schedule type, with A1111's fallbacks.
    name = given.get("sampler_name") or given.get("sampler_index") or fields["sampler_name"]
    schedule = fields.get("scheduler")
    sampler, fields["scheduler"], notes = resolve_a1111(str(name), str(schedule) if schedule else None)
    fields["sampler_name"] = sampler.name
    reading.substituted += notes
    # 4. Styles, then the settings overridden for this request.
    styles = given.get("styles") or []
    if not isinstance(styles, list) or not all(isinstance(name, str) for name in styles):
        raise FieldErrors.one(("body", "styles"), styles, "must be a list of style names")
    prompt, negative = fields.get("prompt", ""), fields.get("negative_prompt", "")
    if styles and isinstance(prompt, str) and isinstance(negative, str):  # other types: the request names them
        fields["prompt"], fields["negative_prompt"], missing = apply_styles(prompt, negative, styles,
                                                                            dict(context.styles))
        reading.not_applied += [f"style {name!r} (not in styles.csv)" for name in missing]
    reading.styles = styles
    reading.overridden = _overrides(given.get("override_settings"), context, reading)
    fields.update(reading.overridden)
    # 5. What the payload asks that sdart does not do; sdart's own names are not A1111's.
    reading.not_applied += a1111_fields.payload_not_applied(payload, img2img=img2img)
    reading.not_applied += [f"{name} (sdart's native field; A1111 sets it in override_settings or init_images)"
                            for name in ("model", "vae", "init_image") if name in payload]
    fields.update({name: value for name, value in (("init_image", init_image), ("mask", mask)) if value})
    try:
        reading.request = GenerationRequest.parse(fields)
    except RequestError as exc:
        raise FieldErrors.from_request_error(exc) from None
    reading.not_applied = list(dict.fromkeys(reading.not_applied))
    for line in (*reading.substituted, *(f"not applied: {', '.join(reading.not_applied)}",) * bool(reading.not_applied)):
        log.warning("sdapi: %s", line)
    return reading


def _overrides(overrides: Any, context: Context, reading: Reading) -> dict[str, Any]:
    """override_settings → request fields; an unknown checkpoint or VAE is left out and said (A1111 leaves it out)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise FieldErrors.one(("body", "override_settings"), overrides, "must be an object of setting: value")
    fields, notes = a1111_fields.options_to_fields(overrides)
    reading.not_applied += notes
    if "model" in fields:
        name = context.find_model(str(fields.pop("model")))
        if name is None:
            reading.not_applied.append(f"Model {overrides['sd_model_checkpoint']!r} (not on this server)")
        else:
            fields["model"] = name
    if "vae" in fields:
        vae = str(fields.pop("vae"))
        if vae in OWN_VAE or vae in context.vaes:
            fields["vae"] = vae
        else:
            reading.not_applied.append(f"VAE {vae!r} (not in the VAE folder)")
    return fields


def echoed_parameters(payload: Mapping[str, Any], *, img2img: bool) -> dict[str, Any]:
    """A1111's `parameters`: its own request fields, as sent or at A1111's default; never other keys (clients put
    their own settings, credentials included, in the payload); pictures only with `include_init_images`."""
    names = a1111_fields.IMG2IMG_FIELDS if img2img else a1111_fields.TXT2IMG_FIELDS
    names += tuple(name for name in a1111_fields.FORGE_FIELDS if name in payload)
    shown = {name: payload.get(name, a1111_fields.FIELDS_BY_NAME[name].default) for name in names}
    if not payload.get("include_init_images"):
        shown.pop("init_images", None), shown.pop("mask", None)
    shown.pop("include_init_images", None)
    return shown
