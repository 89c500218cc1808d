"""A1111 `parameters` infotext: write it, parse it, and move it in and out of PNG text chunks.

Format (A1111 modules/processing.py `create_infotext`, parsed by `parse_generation_parameters`):

    {prompt}
    Negative prompt: {negative prompt}            ← only when there is one
    Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: 6ce0161689, …

A value holding ",", ":" or a newline is written as a JSON string. A reader takes the last line as the
parameters when it holds at least three `Key: value` pairs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

PNG_KEY = "parameters"

# A1111's re_param_code: a key of word characters/spaces/dashes/slashes, then a quoted or unquoted value.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _number(value: float) -> str:
    return f"{value:g}"


def format_infotext(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler_name: str,
    scheduler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_name: str | None = None,
    model_hash: str | None = None,
    clip_skip: int = 1,
    batch_size: int = 1,
    batch_pos: int = 0,
    extra: dict[str, Any] | None = None,
    version: str | None = None,
) -> str:
    """The A1111 infotext of one image, keys in A1111's order."""
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler_name,
        "Schedule type": None if scheduler == "Automatic" else scheduler,
        "CFG scale": _number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": model_name,
        "Batch size": batch_size if batch_size > 1 else None,
        "Batch pos": batch_pos if batch_size > 1 else None,
        "Clip skip": clip_skip if clip_skip > 1 else None,
        **(extra or {}),
        "Version": version,
    }
    line = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"


@dataclass
class Infotext:
    """A parsed infotext: the prompts and the `Key: value` parameters, values as written (strings)."""

    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def request_fields(self) -> dict[str, Any]:
        """The GenerationRequest fields these parameters set (unknown keys are left out: see `unapplied`)."""
        p = self.params
        fields: dict[str, Any] = {"prompt": self.prompt, "negative_prompt": self.negative_prompt}
        for key, (name, convert) in _REQUEST_KEYS.items():
            if key in p:
                try:
                    fields[name] = convert(p[key])
                except ValueError:
                    fields[name] = p[key]  # left for request validation to name
        for key, (width, height) in _SIZE_KEYS.items():
            if size := _SIZE.match(p.get(key, "")):
                fields[width], fields[height] = int(size.group(1)), int(size.group(2))
        # As A1111 pastes an infotext: hires fix was on when its scale, box or upscaler is written.
        if any(key in p for key in ("Hires upscale", "Hires resize", "Hires upscaler")):
            fields["enable_hr"] = True
        return fields

    def unapplied(self) -> dict[str, str]:
        """The parameters `request_fields` does not turn into a field, but for those that only describe the
        picture (DESCRIPTIVE_KEYS)."""
        used = {*_REQUEST_KEYS, *_SIZE_KEYS, *DESCRIPTIVE_KEYS}
        return {key: value for key, value in self.params.items() if key not in used}


def _checkpoint_name(title: str) -> str:
    """A1111 writes a checkpoint as its short title, "name [hash]"; the name is what finds it."""
    return re.sub(r"\s*\[[0-9a-fA-F]{8,12}\]$", "", title)


# Infotext key → (GenerationRequest field, conversion).
_REQUEST_KEYS: dict[str, tuple[str, Any]] = {
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Clip skip": ("clip_skip", int),
    "Denoising strength": ("denoising_strength", float),
    "Variation seed": ("subseed", int),
    "Variation seed strength": ("subseed_strength", float),
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "Hires CFG Scale": ("hr_cfg", float),
    "Refiner": ("refiner_checkpoint", _checkpoint_name),
    "Refiner switch at": ("refiner_switch_at", float),
}
# Infotext keys written WxH → the two fields they set.
_SIZE_KEYS: dict[str, tuple[str, str]] = {
    "Size": ("width", "height"),
    "Hires resize": ("hr_resize_x", "hr_resize_y"),
    "Seed resize from": ("seed_resize_from_w", "seed_resize_from_h"),
}
# Keys that say how a picture was made without being a setting to repeat: the model's hash (the name is in
# "Model"), the program's version, and a batch image's place in its batch (its own Seed already repeats it).
DESCRIPTIVE_KEYS = frozenset({"Model hash", "Version", "Batch size", "Batch pos"})


def parse_infotext(text: str) -> Infotext:
    """Parse an A1111 infotext the way A1111 does."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) < 3:
        last = ""
    else:
        lines = lines[:-1]
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if not negative_lines and line.startswith("Negative prompt:"):
            negative_lines.append(line[len("Negative prompt:") :].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    params = {key.strip(): unquote(value.strip()) for key, value in _PARAM.findall(last)}
    return Infotext(prompt="\n".join(prompt_lines), negative_prompt="\n".join(negative_lines), params=params)


def png_info(infotext: str | None, more_text: dict[str, str] | None = None) -> PngImagePlugin.PngInfo:
    """A PngInfo holding the infotext under `parameters` and `more_text` under their keys (tEXt, or iTXt when a
    text isn't Latin-1)."""
    info = PngImagePlugin.PngInfo()
    for key, value in {**({PNG_KEY: infotext} if infotext is not None else {}), **(more_text or {})}.items():
        info.add_text(key, value)
    return info


def read_infotext(source: str | Path | Image.Image) -> str | None:
    """The `parameters` text of a PNG (path or opened image), or None when it has none."""
    if isinstance(source, Image.Image):
        return source.info.get(PNG_KEY)
    with Image.open(source) as image:
        return image.info.get(PNG_KEY)


def add_parameters(text: str, params: dict[str, Any]) -> str:
    """`text` (an infotext with a parameters line) with `params` set on that line: keys already there get the new
    value in place, new keys go at the end, values quoted as A1111 quotes them. ValueError without such a line."""
    head, _, last = text.rstrip("\n").rpartition("\n")
    pairs = _PARAM.findall(last)
    if len(pairs) < 3:
        raise ValueError("the infotext has no parameters line to add to")
    new = {key: quote(value) for key, value in params.items() if value is not None}
    present = {key.strip() for key, _ in pairs}
    if present.isdisjoint(new):  # the common case: the line is kept byte for byte
        line = ", ".join([last.rstrip().rstrip(","), *(f"{key}: {value}" for key, value in new.items())])
    else:
        kept = [f"{key.strip()}: {new.pop(key.strip(), value.strip())}" for key, value in pairs]
        line = ", ".join([*kept, *(f"{key}: {value}" for key, value in new.items())])
    return f"{head}\n{line}" if head or text.startswith("\n") else line
