"""The job store's history tools in-process (no HTTP): the queue in running order, deleting a finished job in one
transaction, which uploads jobs still use, and every-job listeners of the event hub."""

from __future__ import annotations

import asyncio

from sdart.request import GenerationRequest
from sdart.server.events import EVERY_JOB, EventHub
from sdart.server.store import JobStore


def request(prompt: str, **fields) -> GenerationRequest:
    # Stored requests are read back with context "stored", so a picture path need not exist.
    return GenerationRequest.model_validate({"prompt": prompt, "steps": 2, **fields}, context={"stored": True})


def test_waiting_lists_running_first_then_queued_in_order(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    a, b, c = (store.add(request(name), "api") for name in "abc")
    store.claim_next()  # a runs
    store.cancel_queued(b.id)
    d = store.add(request("d"), "web")
    assert [job.id for job in store.waiting()] == [a.id, c.id, d.id]


def test_delete_finished_removes_the_job_and_its_image_rows_only_when_finished(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.add(request("kept then deleted"), "api")
    other = store.add(request("another"), "api")
    store.claim_next()
    store.add_image(job.id, 0, 7, "00001-7.png", "text")
    store.add_image(job.id, 1, 8, "00002-8.png", "text")
    store.add_image(other.id, 0, 9, "00003-9.png", "text")

    running, files = store.delete_finished(job.id)
    assert running.status == "running" and files == [] and store.get(job.id) is not None
    store.finish(job.id, "succeeded")
    deleted, files = store.delete_finished(job.id)
    assert deleted.id == job.id and deleted.status == "succeeded" and files == ["00001-7.png", "00002-8.png"]
    assert store.get(job.id) is None and store.images(job.id) == []
    assert store.image_filenames() == {"00003-9.png"}  # the other job's image stays
    assert store.delete_finished(job.id) == (None, [])


def test_pictures_in_use_names_the_uploads_some_job_still_uses(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.add(request("img2img", init_image="/data/inputs/a.png"), "api")
    store.add(request("inpaint", init_image="/data/inputs/b.png", mask="/data/inputs/m.png"), "api")
    asked = {"/data/inputs/a.png", "/data/inputs/m.png", "/data/inputs/gone.png"}
    assert store.pictures_in_use(asked) == {"/data/inputs/a.png", "/data/inputs/m.png"}
    assert store.pictures_in_use(set()) == set()


def test_every_job_listeners_hear_each_jobs_events_and_broadcasts():
    async def scenario():
        hub = EventHub()
        everyone = hub.subscribe_all()
        one = hub.subscribe("a" * 32)
        hub.publish("a" * 32, {"event": "started"})
        hub.publish("b" * 32, {"event": "queued", "position": 1})
        hub.broadcast({"event": "model", "state": "loading", "name": "x"})
        await asyncio.sleep(0)  # deliveries are scheduled on the loop
        heard = [everyone.get_nowait() for _ in range(everyone.qsize())]
        assert heard == [{"event": "started", "job": "a" * 32}, {"event": "queued", "position": 1, "job": "b" * 32},
                         {"event": "model", "state": "loading", "name": "x"}]
        assert one.get_nowait() == {"event": "started"} and one.empty()  # a job's own listeners: its events only
        hub.unsubscribe(EVERY_JOB, everyone)
        hub.publish("a" * 32, {"event": "done"})
        await asyncio.sleep(0)
        assert everyone.empty()

    asyncio.run(scenario())
