"""Nothing is lost: kill -9 with jobs queued and running, restart, and every job completes exactly once."""

from __future__ import annotations

import sqlite3


def test_kill_9_then_restart_runs_every_job_exactly_once(make_server, tmp_path):
    data_dir = tmp_path / "data"
    first = make_server(data_dir=data_dir).start()
    done_before = first.submit(prompt="finished before the crash", steps=2, seed=1)
    finished_before = first.wait(done_before)
    # The running job has three batches; we kill it after its first image is saved, mid-way through the second.
    running = first.submit(prompt="running at the crash", steps=40, n_iter=3, seed=100)
    queued = [first.submit(prompt=f"queued at the crash {i}", steps=2, seed=200 + i) for i in range(3)]
    first.wait(running, until=lambda job: len(job["images"]) == 1 and (job["step"] or 0) >= 3)
    first.kill()

    second = make_server(data_dir=data_dir).start()
    jobs = {job_id: second.wait(job_id) for job_id in [done_before, running, *queued]}
    second.stop()  # a clean stop, so the database is quiet while we read it

    assert {job["status"] for job in jobs.values()} == {"succeeded"}
    assert jobs[running]["seeds"] == [100, 101, 102] and [i["position"] for i in jobs[running]["images"]] == [0, 1, 2]
    assert jobs[running]["attempts"] == 2  # started again once, resumed after its saved image
    assert all(jobs[job_id]["attempts"] == 1 for job_id in [done_before, *queued])
    assert [jobs[job_id]["seeds"] for job_id in queued] == [[200], [201], [202]]

    # Exactly once, on disk and in the store: one row per image, one file per row, no stray files.
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT job_id, position, filename FROM images").fetchall()
    assert len(rows) == 1 + 3 + 3
    assert len({(job_id, position) for job_id, position, _ in rows}) == len(rows)
    assert sorted(p.name for p in (data_dir / "images").glob("*.png")) == sorted(name for *_, name in rows)
    assert not list((data_dir / "images").glob(".sdart-*"))

    # Finished jobs stay finished across the restart, and their images survive.
    assert jobs[done_before]["finished_at"] == finished_before["finished_at"]
    assert jobs[done_before]["images"] == finished_before["images"]
