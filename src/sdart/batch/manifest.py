"""The batch output folder: a lock, the append-only manifest, and verification of the PNGs it lists."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdart.batch.plan import LOCK_FILE, MANIFEST, Task

if TYPE_CHECKING:  # the Engine pulls in torch and diffusers; planning and resuming must not
    pass


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
        from sdart.images.output import ensure_writable_dir

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

    from sdart.images.infotext import PNG_KEY

    try:
        with Image.open(path) as image:
            image.load()  # decodes every row: a truncated or damaged file fails here, not only a bad header
            return infotext is not None and image.info.get(PNG_KEY) == infotext
    except (OSError, ValueError, SyntaxError):  # PIL raises all three for damaged files
        return False


