"""Batch generation: prompt files → one task per image → PNGs named by key, recorded in an append-only manifest.

The flow (`sdart batch`, or the Ray runner in `sdart.ray_runner`):

1. `plan_batch` reads `.txt`/`.jsonl`/`.csv` files; each line is the command-line defaults overridden by the
   line's own fields, validated by `GenerationRequest.parse`; a bad line becomes a `LineError` naming file:line
   and the field, and the other lines still run. Each good line expands (`seeds`, `n_iter`, `batch_size`) into
   one `Task` per image, keyed by a stable hash of its request (seed included) and model.
2. `BatchDir` locks the output folder, reads `manifest.jsonl` and keeps the tasks whose PNG is not on disk,
   not decodable, or whose `parameters` chunk is not the one recorded: those are redone; the rest are skipped.
3. An executor (a local Engine, or Ray actors) turns tasks into records; the driver appends each record with
   fsync as it arrives, so a kill -9 loses at most the images in flight and never leaves a torn manifest.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdart.request import MAX_RANDOM_SEED, MAX_SEED, GenerationRequest, RequestError

if TYPE_CHECKING:  # the Engine pulls in torch and diffusers; planning and resuming must not
    pass

MANIFEST = "manifest.jsonl"
LOCK_FILE = ".sdart-batch.lock"
KEY_VERSION = 1  # bump when the key recipe changes, so old manifests don't match new keys by accident
SUFFIXES = (".txt", ".jsonl", ".csv")
BATCH_ONLY_FIELDS = ("seeds",)  # line fields that expand a line rather than being request fields



# --- 1. Prompt files → tasks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineError:
    """A prompt-file line that can't become a request: where it is and which fields are wrong."""

    source: str  # "prompts.csv:7"
    errors: list[tuple[str, Any, str]]  # (field, value, message), as RequestError.errors

    def __str__(self) -> str:
        return "; ".join(f"{self.source}: {name} = {_short(value)}: {message}" for name, value, message in self.errors)


@dataclass(frozen=True)
class Task:
    """One image: a request with batch_size 1, n_iter 1 and a fixed seed, and where it came from."""

    key: str
    source: str  # "prompts.txt:3" (the first line that asked for it)
    request: GenerationRequest

    @property
    def file(self) -> str:
        return f"{self.key}.png"

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "source": self.source, "request": self.request.model_dump()})

    @classmethod
    def from_json(cls, text: str) -> Task:
        data = json.loads(text)
        return cls(data["key"], data["source"], GenerationRequest.parse(data["request"]))


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0  # good lines
    duplicates: int = 0  # images asked for twice (same key): made once


def parse_seeds(text: str | int | list[int]) -> list[int]:
    """`"0-3,10"` → [0, 1, 2, 3, 10]. Also accepts an int or a list (from JSON lines)."""
    if isinstance(text, bool):
        raise ValueError("must be seeds like 0-3,10")
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in text):
            raise ValueError("must be a list of integers")
        return list(text)
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"must be seeds like 0-3,10 (got {part!r})")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"range {part!r} goes backwards")
        if high - low >= 100_000:
            raise ValueError(f"range {part!r} is over 100000 seeds")
        seeds.extend(range(low, high + 1))
    if not seeds:
        raise ValueError("no seeds given")
    return seeds


def read_prompt_file(path: Path) -> Iterator[tuple[str, dict[str, Any] | LineError]]:
    """Yield (source, fields) per prompt line, or (source, LineError) for a line that can't be read."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"prompt file = {str(path)!r}: use .txt (one prompt a line), .jsonl or .csv")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except OSError as exc:
        raise ValueError(f"prompt file = {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompt file = {str(path)!r}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    name = path.name
    if suffix == ".csv":
        yield from _csv_lines(name, text)
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        source = f"{name}:{number}"
        if suffix == ".txt":
            yield source, {"prompt": line}
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield source, LineError(source, [("line", line, f"not valid JSON ({exc.msg} at column {exc.colno})")])
            continue
        if isinstance(value, str):  # a bare JSON string is a prompt
            value = {"prompt": value}
        if not isinstance(value, dict):
            yield source, LineError(source, [("line", line, "must be a JSON object of request fields")])
            continue
        yield source, value


def _csv_lines(name: str, text: str) -> Iterator[tuple[str, dict[str, Any] | LineError]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    start = reader.line_num + 2  # physical line of the first data row (a quoted cell may span lines)
    for row in reader:
        source = f"{name}:{start}"
        start = reader.line_num + 1
        if None in row:  # more cells than header names
            yield source, LineError(source, [("line", row[None], "more cells than the header has names")])
            continue
        # An empty cell means "not given": the command-line default applies. CSV cells are text; the request
        # model converts "25" to 25 the way it converts any A1111 form value.
        fields = {key.strip(): value for key, value in row.items() if key and value not in (None, "")}
        if fields:
            yield source, fields


def plan_batch(paths: Iterable[Path], defaults: dict[str, Any], *, model: str, seeds: list[int] | None = None,
               check: Callable[[GenerationRequest], None] | None = None) -> Plan:
    """Read prompt files and expand every good line into one task per image.

    `defaults` are request fields from the command line; a line's fields override them. `seeds` (from --seeds)
    start one run of `n_iter × batch_size` images each unless the line sets `seed` or `seeds` itself. `check`: what
    this machine must have for a line (its hires upscaler), run once per line; its RequestError makes a bad line.
    """
    plan = Plan()
    seen: set[str] = set()
    for path in paths:
        for source, fields in read_prompt_file(Path(path)):
            if isinstance(fields, LineError):
                plan.errors.append(fields)
                continue
            try:
                tasks = expand_line(source, fields, defaults, model=model, seeds=seeds)
                if check is not None and tasks:
                    check(tasks[0].request)  # a line's tasks differ only by their seeds
            except RequestError as exc:
                plan.errors.append(LineError(source, exc.errors))
                continue
            plan.lines += 1
            for task in tasks:
                if task.key in seen:
                    plan.duplicates += 1
                    continue
                seen.add(task.key)
                plan.tasks.append(task)
    return plan


def expand_line(source: str, fields: dict[str, Any], defaults: dict[str, Any], *, model: str,
                seeds: list[int] | None = None) -> list[Task]:
    """One line → its tasks. Raises RequestError naming the bad field."""
    fields = dict(fields)
    line_seeds = fields.pop("seeds", None)
    merged = {**defaults, **fields}
    base = GenerationRequest.parse(merged)
    base = base.replace(model=base.model or model)
    if "seed" in fields:
        starts = [base.seed]
    elif line_seeds is not None:
        try:
            starts = parse_seeds(line_seeds)
        except ValueError as exc:
            raise RequestError([("seeds", line_seeds, str(exc))]) from None
    elif seeds is not None:
        starts = seeds
    else:
        starts = [base.seed]
    # A random seed (-1) would give new keys on every run and defeat resuming: derive it from the request instead,
    # so the same line always means the same images.
    starts = [s if s >= 0 else _derived_seed(base, base.images_total) for s in starts]
    if base.subseed_strength and base.subseed < 0:
        base = base.model_copy(update={"subseed": _derived_seed(base, base.images_total, salt="subseed")})
    # Each start is one run of images_total images; its image i takes A1111's seeds of image i (seed + i, or with
    # variation seeds the same seed and subseed + i).
    image_seeds = list(dict.fromkeys(base.model_copy(update={"seed": start}).image_seeds(i)
                                     for start in starts for i in range(base.images_total)))
    for name, top in (("seed", max(seed for seed, _ in image_seeds)), ("subseed", max(sub for _, sub in image_seeds))):
        if top > MAX_SEED:
            raise RequestError([(name, top, f"seeds run past {MAX_SEED}")])
    single = base.model_copy(update={"batch_size": 1, "n_iter": 1})
    tasks = [single.model_copy(update={"seed": seed, "subseed": subseed}) for seed, subseed in image_seeds]
    return [Task(task_key(task, task.seed), source, task) for task in tasks]


def task_key(request: GenerationRequest, seed: int) -> str:
    """Stable id of one image: what decides its pixels (request fields, model, seed), not where the line sits."""
    fields = {**request.model_dump(), "seed": seed, "batch_size": 1, "n_iter": 1}
    blob = json.dumps({"v": KEY_VERSION, "request": fields}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _derived_seed(request: GenerationRequest, count: int, salt: str = "") -> int:
    blob = (json.dumps(request.model_dump(), sort_keys=True, ensure_ascii=False) + salt).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") % (MAX_RANDOM_SEED - count)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


