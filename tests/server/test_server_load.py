"""100 jobs from 10 concurrent clients: every one accepted once, run once, and accounted for."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def test_100_jobs_from_10_clients(make_server):
    server = make_server().start()  # its own store, so the count below is exact

    def client_session(client_no: int) -> list[str]:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            ids = []
            for i in range(10):
                response = client.post("/api/v1/jobs", json={"prompt": f"client {client_no} job {i}", "steps": 1,
                                                             "width": 32, "height": 32, "seed": client_no * 100 + i})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
                client.get(f"/api/v1/jobs/{ids[-1]}").raise_for_status()  # reads interleaved with writes
            return ids

    with ThreadPoolExecutor(10) as pool:
        ids = [job_id for batch in pool.map(client_session, range(10)) for job_id in batch]
    assert len(ids) == len(set(ids)) == 100

    deadline = time.monotonic() + 120
    while server.client.get("/api/v1/health").json()["queue"]["succeeded"] < 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    history = server.client.get("/api/v1/jobs", params={"limit": 200}).json()
    assert history["total"] == 100 and {job["id"] for job in history["jobs"]} == set(ids)
    assert {job["status"] for job in history["jobs"]} == {"succeeded"}
    assert all(job["attempts"] == 1 and len(job["images"]) == 1 for job in history["jobs"])
    seeds = sorted(job["seeds"][0] for job in history["jobs"])
    assert seeds == sorted(c * 100 + i for c in range(10) for i in range(10))
    # Queue order is submission order: the worker ran them first-in, first-out.
    by_start = sorted(history["jobs"], key=lambda job: job["started_at"])
    assert [job["id"] for job in by_start] == [job["id"] for job in sorted(history["jobs"], key=lambda j: j["created_at"])]
