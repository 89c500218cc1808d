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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

PNG_KEY = "parameters"



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


def hashes_value(hashes: Iterable[tuple[str, str]]) -> str | None:
    """A `TI hashes` / `Lora hashes` value from (name, short hash) pairs, as A1111 writes it: `name: hash, …`, each
    name without `:` and `,` (they would split the value) and once, with its first hash; None when there are none."""
    written: dict[str, str] = {}
    for name, short in hashes:
        written.setdefault(name.replace(":", "").replace(",", ""), short)
    return ", ".join(f"{name}: {short}" for name, short in written.items()) or None


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
    """A parsed infotext: the prompts and the `Key: value` parameters, values as written (strings; a JSON value
    whole, as its JSON text)."""

    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def request_fields(self) -> dict[str, Any]:
        """The GenerationRequest fields these parameters set, but the model: finding it is the front end's (a
        name this machine or server may not have). Keys sdart does not apply are left out: see `not_applied`."""
        from sdart.a1111_fields import infotext_fields

        fields = {"prompt": self.prompt, "negative_prompt": self.negative_prompt, **infotext_fields(self.params)}
        fields.pop("model", None)
        return fields

    def not_applied(self, request: dict[str, Any], settings: dict[str, str] | None = None) -> list[str]:
        """The keys a re-run as `request` (its final fields) does not apply (sdart.a1111_fields)."""
        from sdart.a1111_fields import infotext_not_applied

        return infotext_not_applied(self.params, request, settings)

    def unapplied(self) -> dict[str, str]:
        """Key: value of the parameters the request fields alone do not apply; `Model` among them, for the front
        end to find."""
        keys = self.not_applied(self.request_fields())
        if "Model" in self.params:
            keys.append("Model")
        return {key: self.params[key] for key in dict.fromkeys(keys)}

    def json_value(self, key: str) -> Any:
        """A parameter holding JSON (`Hashes`, `Civitai resources`, …) decoded; None when absent or not JSON."""
        try:
            return json.loads(self.params[key])
        except (KeyError, ValueError):
            return None


def parse_infotext(text: str) -> Infotext:
    """Parse an infotext the way A1111 does (`parse_generation_parameters`), and as forgivingly as the readers people
    use: NUL bytes dropped, CRLF or CR line ends, values quoted as JSON strings or written as bare JSON objects and
    lists (`Hashes: {"vae": "…", "embed:x": "…"}`) kept whole, keys in any order, numbers of any size kept as
    written, and the parameters found where A1111 and the others put them (`_parameter_block`)."""
    lines = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    start = _parameter_block(lines)
    params: dict[str, str] = {}
    for line in lines[start:]:
        params.update(parse_parameters(line))
    lines = lines[:start]
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if not negative_lines and line.lstrip().startswith("Negative prompt:"):
            negative_lines.append(line.lstrip()[len("Negative prompt:"):].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    return Infotext(prompt="\n".join(prompt_lines), negative_prompt="\n".join(negative_lines), params=params)


def _parameter_block(lines: list[str]) -> int:
    """Where the parameter lines start (len(lines) when there are none).

    A1111 writes them as one line beginning `Steps: `; SD.Next wraps them over several, and some writers leave out
    keys, so: the last line beginning `Steps:` when it and every line after it hold nothing but `Key: value` pairs;
    else A1111's own rule, the last line when it holds at least three pairs.
    """
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].lstrip().startswith("Steps:"):
            if all(parse_parameters(line, whole=True) for line in lines[index:]):
                return index
            break
    if lines and len(parse_parameters(lines[-1])) >= 3:
        return len(lines) - 1
    return len(lines)


# A key as A1111 writes one (word characters, spaces, dashes, slashes; Forge and SD.Next add dots), then its colon.
_KEY = re.compile(r"\s*(\w[\w \-/.']*?)\s*:\s*")
_JSON = json.JSONDecoder()


def parse_parameters(line: str, *, whole: bool = False) -> dict[str, str]:
    """The `Key: value, Key: value` pairs of one parameter line; with `whole`, {} unless the line is nothing but
    pairs. A quoted value is unquoted; a bare JSON object or list is kept whole as its text; anything else runs to
    the next comma (A1111's `re_param`). A segment without a colon is a flag (A1111 writes `Key` when the value
    equals the key) and is kept as key: key."""
    pairs: dict[str, str] = {}
    position, end = 0, len(line)
    while position < end:
        match = _KEY.match(line, position)
        if match is None:
            comma = line.find(",", position)
            segment = line[position: comma if comma >= 0 else end].strip()
            if whole and segment:
                return {}
            if segment and re.fullmatch(r"\w[\w \-/.']*", segment):
                pairs[segment] = segment
            position = end if comma < 0 else comma + 1
            continue
        value, position = _value(line, match.end())
        pairs[match.group(1)] = value
    return pairs


def _value(line: str, start: int) -> tuple[str, int]:
    """One value starting at `start` and the position after its separating comma."""
    first = line[start:start + 1]
    if first in ('"', "{", "["):
        try:
            decoded, stop = _JSON.raw_decode(line, start)
        except ValueError:
            decoded, stop = None, -1
        rest = line[stop:].lstrip() if stop >= 0 else ""
        if stop >= 0 and (not rest or rest.startswith(",")):
            text = decoded if first == '"' and isinstance(decoded, str) else line[start:stop]
            return text, line.find(",", stop) + 1 or len(line)
        if first == '"' and line[start + 1:start + 2] in ("{", "["):  # JSON quoted without escaping (FreeU Stages)
            try:
                _, inner = _JSON.raw_decode(line, start + 1)
            except ValueError:
                inner = -1
            if inner >= 0 and line[inner:inner + 1] == '"' and line[inner + 1:].lstrip()[:1] in ("", ","):
                return line[start + 1:inner], line.find(",", inner) + 1 or len(line)
    comma = line.find(",", start)
    stop = comma if comma >= 0 else len(line)
    return line[start:stop].strip(), stop + 1 if comma >= 0 else len(line)


def png_info(infotext: str | None, more_text: dict[str, str] | None = None) -> PngImagePlugin.PngInfo:
    """A PngInfo holding the infotext under `parameters` and `more_text` under their keys (tEXt, or iTXt when a
    text isn't Latin-1)."""
    info = PngImagePlugin.PngInfo()
    for key, value in {**({PNG_KEY: infotext} if infotext is not None else {}), **(more_text or {})}.items():
        info.add_text(key, value)
    return info


def read_infotext(source: str | Path | Image.Image) -> str | None:
    """The generation parameters of an image (path or opened image), or None when it has none: a PNG's `parameters`
    text chunk, else the EXIF UserComment that A1111, Forge and Civitai write into JPEG and WebP files."""
    if isinstance(source, Image.Image):
        return source.info.get(PNG_KEY) or _exif_comment(source)
    with Image.open(source) as image:
        return image.info.get(PNG_KEY) or _exif_comment(image)


_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


def _exif_comment(image: Image.Image) -> str | None:
    """EXIF UserComment: an 8-byte character code (`UNICODE\\0` + UTF-16, big-endian as piexif writes it, or
    `ASCII\\0\\0\\0`) before the text."""
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # noqa: BLE001 - broken EXIF is no parameters, not an error
        return None
    if isinstance(raw, str):
        return raw or None
    if not isinstance(raw, bytes) or len(raw) <= 8:
        return None
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        # piexif writes big-endian; a little-endian writer shows as text with its NULs in the odd places
        endian = "utf-16-le" if body[1:2] == b"\x00" and body[:1] != b"\x00" else "utf-16-be"
        text = body.decode(endian, errors="replace")
    else:
        text = body.decode("utf-8", errors="replace")
    return text.strip("\x00") or None


def add_parameters(text: str, params: dict[str, Any]) -> str:
    """`text` (an infotext with a parameters line) with `params` set on that line: keys already there get the new
    value in place, new keys go at the end, values quoted as A1111 quotes them. ValueError without such a line."""
    head, _, last = text.rstrip("\n").rpartition("\n")
    pairs = parse_parameters(last)
    if len(pairs) < 3:
        raise ValueError("the infotext has no parameters line to add to")
    new = {key: quote(value) for key, value in params.items() if value is not None}
    if set(pairs).isdisjoint(new):  # the common case: the line is kept byte for byte
        line = ", ".join([last.rstrip().rstrip(","), *(f"{key}: {value}" for key, value in new.items())])
    else:
        kept = [f"{key}: {new.pop(key, quote(value))}" for key, value in pairs.items()]
        line = ", ".join([*kept, *(f"{key}: {value}" for key, value in new.items())])
    return f"{head}\n{line}" if head or text.startswith("\n") else line
