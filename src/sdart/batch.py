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

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdart.request import MAX_SEED, GenerationRequest, RequestError

if TYPE_CHECKING:  # the Engine pulls in torch and diffusers; planning and resuming must not
    from sdart.engine import Engine

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


def plan_batch(paths: Iterable[Path], defaults: dict[str, Any], *, model: str, seeds: list[int] | None = None) -> Plan:
    """Read prompt files and expand every good line into one task per image.

    `defaults` are request fields from the command line; a line's fields override them. `seeds` (from --seeds)
    start one run of `n_iter × batch_size` images each unless the line sets `seed` or `seeds` itself.
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
    image_seeds = list(dict.fromkeys(s + i for s in starts for i in range(base.images_total)))
    if (top := max(image_seeds)) > MAX_SEED:
        raise RequestError([("seed", top, f"seeds run past {MAX_SEED}")])
    single = base.model_copy(update={"batch_size": 1, "n_iter": 1})
    return [Task(task_key(single, seed), source, single.model_copy(update={"seed": seed})) for seed in image_seeds]


def task_key(request: GenerationRequest, seed: int) -> str:
    """Stable id of one image: what decides its pixels (request fields, model, seed), not where the line sits."""
    fields = {**request.model_dump(), "seed": seed, "batch_size": 1, "n_iter": 1}
    blob = json.dumps({"v": KEY_VERSION, "request": fields}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _derived_seed(request: GenerationRequest, count: int) -> int:
    blob = json.dumps(request.model_dump(), sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") % (MAX_SEED - count)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- 2. The output folder: lock, manifest, verification ------------------------------------------------------


class BatchDirBusy(RuntimeError):
    """Another `sdart batch` holds the output folder."""


class BatchDir:
    """An output folder owned by one run at a time (flock; released by the kernel even on kill -9).

    `manifest.jsonl` holds one JSON record per finished attempt; the latest record of a key wins. Records are
    appended with flush + fsync, so after any kill the file is whole records plus at most one torn tail, which
    opening the folder cuts off.
    """

    def __init__(self, folder: str | Path):
        from sdart.output import ensure_writable_dir

        self.folder = ensure_writable_dir(folder)
        self.manifest_path = self.folder / MANIFEST
        self._lock = open(self.folder / LOCK_FILE, "a+")  # noqa: SIM115 - held for the object's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise BatchDirBusy(f"output folder {str(self.folder)!r} is in use by another sdart batch") from None
        self._drop_torn_tail()
        # Temporary PNGs of a killed run: nobody else can be writing here while we hold the lock.
        for stale in self.folder.glob(".sdart-*.png.tmp"):
            stale.unlink(missing_ok=True)
        self._manifest = open(self.manifest_path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._manifest.close()
        self._lock.close()

    def __enter__(self) -> BatchDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_torn_tail(self) -> None:
        if not self.manifest_path.exists():
            return
        with open(self.manifest_path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> dict[str, dict[str, Any]]:
        """The latest record of each key."""
        return {record["key"]: record for record in read_manifest(self.manifest_path)}

    def append(self, record: dict[str, Any]) -> None:
        self._manifest.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._manifest.flush()
        os.fsync(self._manifest.fileno())

    def is_done(self, record: dict[str, Any] | None) -> bool:
        """True when the record says done and its PNG is on disk, decodes, and carries the recorded parameters."""
        if not record or record.get("status") != "done" or not record.get("file"):
            return False
        return verify_png(self.folder / record["file"], record.get("infotext"))

    def split(self, tasks: list[Task]) -> tuple[list[Task], list[Task]]:
        """(to do, already done)."""
        records = self.records()
        todo: list[Task] = []
        done: list[Task] = []
        for task in tasks:
            (done if self.is_done(records.get(task.key)) else todo).append(task)
        return todo, done


def read_manifest(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a manifest; a torn last line (a kill mid-write) is ignored."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict) and "key" in record:
                    yield record


def verify_png(path: Path, infotext: str | None) -> bool:
    from PIL import Image

    from sdart.metadata import PNG_KEY

    try:
        with Image.open(path) as image:
            image.load()  # decodes every row: a truncated or damaged file fails here, not only a bad header
            return infotext is not None and image.info.get(PNG_KEY) == infotext
    except (OSError, ValueError, SyntaxError):  # PIL raises all three for damaged files
        return False


# --- 3. Running tasks ----------------------------------------------------------------------------------------


def generate_task(engine: Engine, task: Task, folder: Path, *, retries: int = 0) -> dict[str, Any]:
    """Make one task's image with `engine`, write `<key>.png`, and return its manifest record.

    Used by the local runner and by each Ray actor. Errors become a failed record (after `retries` more tries)
    rather than an exception, so one bad image never stops the batch.
    """
    from sdart.output import save_image_as

    request = task.request
    if request.model == engine.settings.model or request.model == engine.reference:
        request = request.replace(model=None)  # the loaded model: no reload, even if its reference was normalised
    error = None
    attempt = 0
    for attempt in range(1, retries + 2):
        started = time.perf_counter()
        try:
            result = engine.generate(request, progress=False)
            if not result.images:
                raise RuntimeError("the engine returned no image")
            save_image_as(result.images[0], result.infotexts[0], folder / task.file)
        except Exception as exc:  # noqa: BLE001 - any failure of one image is recorded, the batch goes on
            error = f"{type(exc).__name__}: {exc}"
            continue
        timings = {"total_s": round(time.perf_counter() - started, 4), **result.timings}
        return _record(task, "done", attempt, infotext=result.infotexts[0], timings=timings)
    return _record(task, "failed", attempt, error=error)


def _record(task: Task, status: str, attempts: int, *, infotext: str | None = None, error: str | None = None,
            timings: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "key": task.key,
        "status": status,
        "file": task.file if status == "done" else None,
        "source": task.source,
        "seed": task.request.seed,
        "request": task.request.model_dump(),
        "infotext": infotext,
        "error": error,
        "attempts": attempts,
        "timings": timings or {},
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class Summary:
    done: int = 0  # made in this run
    skipped: int = 0  # already done and verified on disk
    failed: int = 0  # images that failed after their retries
    invalid: int = 0  # prompt-file lines that could not be read
    elapsed_s: float = 0.0
    first_s: float | None = None  # seconds until the first image was recorded (model load included)
    last_s: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def steady_images_per_s(self) -> float | None:
        """Images/s after the first image, i.e. without start-up and model loading."""
        if self.done < 2 or self.first_s is None or self.last_s is None or self.last_s <= self.first_s:
            return None
        return (self.done - 1) / (self.last_s - self.first_s)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.invalid == 0

    def as_dict(self) -> dict[str, Any]:
        steady = self.steady_images_per_s
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "invalid_lines": self.invalid,
                "elapsed_s": round(self.elapsed_s, 3), "images_per_s": round(self.images_per_s, 4),
                "steady_images_per_s": None if steady is None else round(steady, 4), "ok": self.ok}


Executor = Callable[[list[Task]], Iterable[dict[str, Any]]]


def run_batch(plan: Plan, batch_dir: BatchDir, execute: Executor, *,
              on_start: Callable[[list[Task], Summary], None] | None = None,
              on_record: Callable[[dict[str, Any], Summary], None] | None = None) -> Summary:
    """Skip what is done, hand the rest to `execute`, and record each result as it arrives."""
    todo, done = batch_dir.split(plan.tasks)
    summary = Summary(skipped=len(done), invalid=len(plan.errors))
    if on_start is not None:
        on_start(todo, summary)
    started = time.perf_counter()
    try:
        for record in execute(todo):
            batch_dir.append(record)
            now = time.perf_counter() - started
            if record["status"] == "done":
                summary.done += 1
                summary.first_s = summary.first_s if summary.first_s is not None else now
                summary.last_s = now
            else:
                summary.failed += 1
            if on_record is not None:
                on_record(record, summary)
    finally:  # also on Ctrl-C: the summary says what was finished
        summary.elapsed_s = time.perf_counter() - started
    return summary


def local_executor(engine_factory: Callable[[], Engine], folder: Path, *, retries: int = 0) -> Executor:
    """Run tasks one image at a time on one Engine, built only when there is work (a resumed, finished batch
    doesn't load a model)."""

    def execute(tasks: list[Task]) -> Iterator[dict[str, Any]]:
        if not tasks:
            return
        engine = engine_factory()
        for task in tasks:
            yield generate_task(engine, task, folder, retries=retries)

    return execute
