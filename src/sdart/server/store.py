"""The job store: one SQLite file (WAL) holding every job and the images it made.

The database is the queue: a job is a row that moves queued → running → succeeded | failed | cancelled, and
the worker claims the oldest queued row in one UPDATE, so nothing is held only in memory. Images are rows too,
keyed by (job, position): a job resumed after a crash skips the positions it already saved, so every image
is recorded exactly once however many times the process dies.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdart.request import GenerationRequest

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# A job that was running when the process died this many times is failed rather than tried again:
# it may be what kills the process.
MAX_ATTEMPTS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- queue order, never shown to clients
    id          TEXT NOT NULL UNIQUE,                -- opaque: uuid4 hex
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,                       -- "api", "a1111" or "web": who asked
    request     TEXT NOT NULL,                       -- GenerationRequest JSON; seed and size filled in at start
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS images (
    id         TEXT PRIMARY KEY,                     -- opaque: uuid4 hex
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    position   INTEGER NOT NULL,                     -- index within the job: iteration × batch_size + j
    seed       INTEGER NOT NULL,
    filename   TEXT NOT NULL,                        -- chosen by the server, relative to the images folder
    infotext   TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (job_id, position)
);
"""


@dataclass(frozen=True)
class ImageRecord:
    id: str
    job_id: str
    position: int
    seed: int
    filename: str
    infotext: str


@dataclass(frozen=True)
class Job:
    seq: int
    id: str
    status: Status
    source: str
    request: GenerationRequest
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def new_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Thread-safe access to the job database. One connection guarded by a lock: every statement is short,
    and a single writer is all SQLite allows anyway."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (kill -9); only a power cut can lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- queue -------------------------------------------------------------------------------------------

    def add(self, request: GenerationRequest, source: str, max_queued: int | None = None) -> Job | None:
        """Queue a job; None when `max_queued` jobs are already waiting (checked in the same transaction)."""
        with self._tx() as db:
            if max_queued is not None:
                (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
                if queued >= max_queued:
                    return None
            job_id = new_id()
            db.execute("INSERT INTO jobs (id, status, source, request, created_at) VALUES (?, 'queued', ?, ?, ?)",
                       (job_id, source, request.model_dump_json(), time.time()))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def claim_next(self) -> Job | None:
        """Mark the oldest queued job running and return it (None when the queue is empty).

        A job that has already been started MAX_ATTEMPTS times is failed instead and the next one is tried.
        """
        while True:
            with self._tx() as db:
                row = db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    return None
                if row["attempts"] >= MAX_ATTEMPTS:
                    db.execute("UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                               (time.time(), f"the server stopped while running this job {row['attempts']} times; "
                                             "not trying again", row["id"]))
                    continue
                db.execute("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                           (time.time(), row["id"]))
                return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def recover(self) -> int:
        """After a restart: jobs left running by a dead process go back to the front of the queue.

        Their `seq` is unchanged, so they run before anything queued after them.
        """
        with self._tx() as db:
            return db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'").rowcount

    def set_request(self, job_id: str, request: GenerationRequest) -> None:
        """Store the resolved request (seed, size) so that a resumed job makes the same images."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET request = ? WHERE id = ?", (request.model_dump_json(), job_id))

    def finish(self, job_id: str, status: Status, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status = 'running'",
                       (status, time.time(), error, job_id))

    def requeue(self, job_id: str) -> None:
        """A running job interrupted by shutdown (not by its owner) waits for the next start."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'", (job_id,))

    def cancel_queued(self, job_id: str) -> bool:
        """Take a queued job out of the queue; False when it is no longer queued."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                              (time.time(), job_id)).rowcount == 1

    # --- reading -----------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def position(self, job: Job) -> int | None:
        """How many jobs will run before this queued one (the running job included); None unless queued."""
        if job.status != "queued":
            return None
        with self._lock:
            (ahead,) = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'running' OR (status = 'queued' AND seq < ?)", (job.seq,)
            ).fetchone()
        return ahead

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: 0 for status in ("queued", "running", "succeeded", "failed", "cancelled")} | dict(rows)

    def history(self, limit: int, offset: int = 0, status: str | None = None,
                text: str | None = None) -> tuple[list[Job], int]:
        """Jobs newest first, and how many there are in all; `text` keeps those whose prompt or negative prompt
        holds it (case-insensitive for ASCII, as SQLite's LIKE)."""
        clauses, args = [], []
        if status:
            clauses.append("status = ?")
            args.append(status)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(json_extract(request, '$.prompt') LIKE ? ESCAPE '\\'"
                           " OR json_extract(request, '$.negative_prompt') LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
            (total,) = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()
        return [_job(row) for row in rows], total

    def waiting(self) -> list[Job]:
        """The queue as it will run: running jobs first, then queued ones oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE status IN ('running', 'queued') "
                                    "ORDER BY status = 'queued', seq").fetchall()
        return [_job(row) for row in rows]

    # --- removal -----------------------------------------------------------------------------------------

    def delete_finished(self, job_id: str) -> tuple[Job | None, list[str]]:
        """Remove a finished job and its image records in one transaction; returns the job as it was and its
        image file names (the caller removes the files). A job still queued or running is left alone, and so is
        an unknown id (None)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] not in FINISHED:
                return (_job(row) if row else None), []
            filenames = [r[0] for r in db.execute("SELECT filename FROM images WHERE job_id = ?", (job_id,))]
            db.execute("DELETE FROM images WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return _job(row), filenames

    def pictures_in_use(self, paths: set[str]) -> set[str]:
        """Which of these stored uploads some job's request still names (as init_image or mask)."""
        if not paths:
            return set()
        marks = ", ".join("?" * len(paths))
        with self._lock:
            rows = self._db.execute(
                f"SELECT json_extract(request, '$.init_image'), json_extract(request, '$.mask') FROM jobs "
                f"WHERE json_extract(request, '$.init_image') IN ({marks}) OR json_extract(request, '$.mask') IN ({marks})",
                (*paths, *paths)).fetchall()
        return {value for row in rows for value in row if value in paths}

    # --- images ------------------------------------------------------------------------------------------

    def add_image(self, job_id: str, position: int, seed: int, filename: str, infotext: str) -> ImageRecord:
        record = ImageRecord(new_id(), job_id, position, seed, filename, infotext)
        with self._tx() as db:
            db.execute("INSERT INTO images (id, job_id, position, seed, filename, infotext, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (record.id, job_id, position, seed, filename, infotext, time.time()))
        return record

    def images(self, job_id: str) -> list[ImageRecord]:
        with self._lock:
            rows = self._db.execute("SELECT id, job_id, position, seed, filename, infotext FROM images "
                                    "WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
        return [ImageRecord(**dict(row)) for row in rows]

    def image(self, image_id: str) -> ImageRecord | None:
        with self._lock:
            row = self._db.execute("SELECT id, job_id, position, seed, filename, infotext FROM images WHERE id = ?",
                                   (image_id,)).fetchone()
        return ImageRecord(**dict(row)) if row else None

    def image_filenames(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT filename FROM images")}


def _job(row: sqlite3.Row) -> Job:
    fields: dict[str, Any] = dict(row)
    fields["request"] = GenerationRequest.model_validate(json.loads(fields["request"]), context={"stored": True})
    return Job(**fields)
