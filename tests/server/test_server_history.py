"""The native routes behind the web page's history, queue and forms, against a real `sdart serve` on the tiny
model: delete a job with its files, filter the history, the queue in running order, one event stream for every
client's jobs, switching models, and PNG info as job fields."""

from __future__ import annotations

import base64
import io
import json
import sqlite3

from PIL import Image, PngImagePlugin

from sdart.request import GenerationRequest


def data_url(image: Image.Image, infotext: str | None = None) -> str:
    buffer = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text("parameters", infotext)
    image.save(buffer, format="PNG", pnginfo=info)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_delete_removes_images_records_and_uploads_no_other_job_uses(live_server):
    picture = data_url(Image.new("RGB", (64, 64), (30, 90, 200)))
    first = live_server.wait(live_server.submit(prompt="deleted soon", steps=2, n_iter=2, init_image=picture))
    second = live_server.wait(live_server.submit(prompt="shares the picture", steps=2, init_image=picture))
    assert first["status"] == "succeeded", first
    files = [live_server.data_dir / "images" / name for name in _filenames(live_server, first)]
    upload = live_server.data_dir / "inputs" / first["request"]["init_image"]
    assert len(files) == 2 and all(path.is_file() for path in files) and upload.is_file()

    response = live_server.client.delete(f"/api/v1/jobs/{first['id']}")
    assert response.status_code == 200 and response.json() == {"id": first["id"], "deleted": True, "images": 2}
    assert not any(path.exists() for path in files)
    assert live_server.client.get(f"/api/v1/jobs/{first['id']}").status_code == 404
    assert all(live_server.client.get(image["url"]).status_code == 404 for image in first["images"])
    assert upload.is_file()  # the second job still names it

    live_server.client.delete(f"/api/v1/jobs/{second['id']}")
    assert not upload.exists()
    again = live_server.client.delete(f"/api/v1/jobs/{second['id']}")
    assert again.status_code == 404 and again.json()["detail"][0]["loc"] == ["path", "job_id"]


def _filenames(server, job: dict) -> list[str]:
    """The names of a job's image files, as the store records them (clients never see them)."""
    with sqlite3.connect(server.data_dir / "jobs.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT filename FROM images WHERE job_id = ?", (job["id"],))]


def test_delete_refuses_a_running_or_queued_job(live_server):
    running = live_server.submit(prompt="busy", steps=150)
    queued = live_server.submit(prompt="waiting", steps=1)
    live_server.wait(running, until=lambda job: job["status"] == "running")
    for job_id, status in [(running, "running"), (queued, "queued")]:
        response = live_server.client.delete(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 409, response.text
        error = response.json()["detail"][0]
        assert error["loc"] == ["path", "job_id"] and f"is {status}; cancel it first" in error["msg"]
    for job_id in (queued, running):
        live_server.client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert live_server.wait(running)["status"] == "cancelled"
    assert live_server.job(running)["status"] == "cancelled"  # the refused deletes removed nothing
    assert live_server.client.delete(f"/api/v1/jobs/{running}").status_code == 200


def test_history_filters_by_text_and_status_and_pages(live_server):
    ids = [live_server.submit(prompt=prompt, negative_prompt=negative, steps=1) for prompt, negative in [
        ("filter-apple one", ""), ("plain", "no filter-apple here"), ("filter_pear 100% ripe", ""),
        ("FILTER-APPLE two", "")]]
    live_server.wait(ids[-1])

    def history(**params) -> dict:
        response = live_server.client.get("/api/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    apples = history(q="filter-apple")
    assert [job["id"] for job in apples["jobs"]] == [ids[3], ids[1], ids[0]]  # newest first, any case, negative too
    assert apples["total"] == 3 and apples["next_offset"] is None
    # % and _ are the text itself, not LIKE wildcards.
    assert [job["id"] for job in history(q="100% ripe")["jobs"]] == [ids[2]]
    assert history(q="filter_apple")["total"] == 0
    page = history(q="filter-apple", limit=2, offset=0)
    rest = history(q="filter-apple", limit=2, offset=2)
    assert [job["id"] for job in page["jobs"] + rest["jobs"]] == [ids[3], ids[1], ids[0]]
    assert page["next_offset"] == 2 and rest["next_offset"] is None
    assert history(q="filter-apple", status="failed")["total"] == 0
    assert history(q="filter-apple", status="succeeded")["total"] == 3


def test_queue_lists_the_running_job_then_the_waiting_ones(live_server):
    running = live_server.submit(prompt="runs", steps=150)
    waiting = [live_server.submit(prompt=f"waits {i}", steps=1) for i in range(2)]
    live_server.wait(running, until=lambda job: job["status"] == "running" and job["progress"] > 0)
    queue = live_server.client.get("/api/v1/queue").json()
    assert [job["id"] for job in queue["jobs"]] == [running, *waiting]
    assert [job["position"] for job in queue["jobs"]] == [None, 1, 2]
    assert queue["running"] == 1 and queue["queued"] == 2
    assert 0 < queue["jobs"][0]["progress"] < 1 and queue["jobs"][0]["total"] == 150
    for job_id in [*waiting, running]:
        live_server.client.post(f"/api/v1/jobs/{job_id}/cancel")
    live_server.wait(running)
    assert live_server.client.get("/api/v1/queue").json() == {"jobs": [], "running": 0, "queued": 0}


def read_events(lines, until) -> list[tuple[str, dict]]:
    """(name, data) pairs from an SSE response's line iterator, up to and including the first for which until()
    holds."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            if until(*events[-1]):
                return events
    raise AssertionError(f"the stream ended before the awaited event: {events}")


def test_one_event_stream_carries_every_clients_jobs(live_server):
    with live_server.client.stream("GET", "/api/v1/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        hello = read_events(lines, lambda name, data: name == "hello")
        assert hello[-1][1]["model"] and set(hello[-1][1]["queue"]) >= {"queued", "running"}
        job_id = live_server.submit(prompt="seen by every page", steps=3, seed=5)
        seen = read_events(lines, lambda name, data: name == "done" and data.get("job") == job_id)
        mine = [(name, data) for name, data in seen if data.get("job") == job_id]
        names = [name for name, _ in mine]
        assert names[0] == "queued" and mine[0][1]["source"] == "api"
        assert names[1] == "started" and names.count("progress") == 3 and names[-2:] == ["image", "done"]
        assert mine[-1][1]["status"] == "succeeded"

        live_server.client.delete(f"/api/v1/jobs/{job_id}")
        assert read_events(lines, lambda name, data: name == "deleted")[-1][1] == {"job": job_id}


def test_switching_models_is_refused_while_jobs_wait_and_announced(live_server, tiny_model_dir, second_model_dir):
    busy = live_server.submit(prompt="keeps the queue busy", steps=150)
    live_server.wait(busy, until=lambda job: job["status"] == "running")
    refused = live_server.client.post("/api/v1/model", json={"name": second_model_dir.name})
    assert refused.status_code == 409 and refused.json()["detail"][0]["loc"] == ["body", "name"]
    assert "1 job(s) running and 0 waiting" in refused.json()["detail"][0]["msg"]
    live_server.client.post(f"/api/v1/jobs/{busy}/cancel")
    live_server.wait(busy)

    def loaded() -> str:
        return next(m["name"] for m in live_server.client.get("/api/v1/models").json() if m["loaded"])

    with live_server.client.stream("GET", "/api/v1/events", timeout=60) as response:
        lines = response.iter_lines()
        read_events(lines, lambda name, data: name == "hello")
        switched = live_server.client.post("/api/v1/model", json={"name": second_model_dir.name})
        assert switched.status_code == 200 and switched.json()["switched"] is True, switched.text
        assert loaded() == second_model_dir.name
        announced = read_events(lines, lambda name, data: name == "model" and data["state"] == "loaded")
        assert [data["state"] for name, data in announced if name == "model"] == ["loading", "loaded"]
    job = live_server.wait(live_server.submit(prompt="on the other model", steps=1))
    assert f"Model: {second_model_dir.name}," in job["images"][0]["infotext"]
    back = live_server.client.post("/api/v1/model", json={"name": tiny_model_dir.name})
    assert back.json()["switched"] is True and loaded() == tiny_model_dir.name
    same = live_server.client.post("/api/v1/model", json={"name": tiny_model_dir.name})
    assert same.json() == {"name": tiny_model_dir.name, "switched": False, "load_s": 0.0}


def test_png_info_gives_job_fields_and_names_what_is_not_applied(live_server, second_model_dir):
    infotext = (f"a cat, (fluffy:1.2)\nNegative prompt: dog\nSteps: 12, Sampler: Euler a, CFG scale: 5.5, Seed: 9, "
                f"Size: 64x48, Model hash: 1234abcd, Model: {second_model_dir.name}, Face restoration: CodeFormer, "
                'ENSD: 31337, Version: v1.10.1, Lora hashes: "x: 0123"')
    response = live_server.client.post("/api/v1/png-info", json={"image": data_url(Image.new("RGB", (8, 8)), infotext)})
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["infotext"] == infotext
    assert info["request"] == {"prompt": "a cat, (fluffy:1.2)", "negative_prompt": "dog", "steps": 12,
                               "sampler_name": "Euler a", "cfg_scale": 5.5, "seed": 9, "width": 64, "height": 48,
                               "model": second_model_dir.name}
    # Model hash, Version and Lora hashes describe the picture (sdart.a1111_fields: the LoRAs are the prompt's
    # tags); everything else this server does not use is named.
    assert info["not_applied"] == {"Face restoration": "CodeFormer", "ENSD": "31337"}
    assert info["parameters"]["Prompt"] == "a cat, (fluffy:1.2)" and info["parameters"]["Model hash"] == "1234abcd"
    GenerationRequest.parse(info["request"])  # the fields are ones the server takes

    elsewhere = infotext.replace(f"Model: {second_model_dir.name}", "Model: not-on-this-server")
    other = live_server.client.post("/api/v1/png-info", json={"image": data_url(Image.new("RGB", (8, 8)), elsewhere)})
    assert other.json()["not_applied"]["Model"] == "not-on-this-server" and "model" not in other.json()["request"]
    bare = live_server.client.post("/api/v1/png-info", json={"image": data_url(Image.new("RGB", (8, 8)))}).json()
    assert bare == {"infotext": None, "parameters": {}, "request": {}, "not_applied": {}, "other_text": {}}


def test_request_schema_lists_exactly_the_fields_a_job_takes(live_server):
    schema = live_server.client.get("/api/v1/request-schema").json()
    assert set(schema["properties"]) == set(GenerationRequest.model_fields)
    assert schema["properties"]["steps"]["maximum"] == 500 and schema["properties"]["steps"]["default"] == 25


def test_embeddings_are_listed_in_a1111s_shape(shapes_server):
    """The shapes server's embeddings folder: roundish (the word "circle"'s vector) fits, wide-one (768 wide) not."""
    listing = shapes_server.client.get("/sdapi/v1/embeddings").json()
    assert set(listing) == {"loaded", "skipped"}
    assert list(listing["loaded"]) == ["roundish"] and list(listing["skipped"]) == ["wide-one"]
    assert listing["loaded"]["roundish"]["vectors"] == 1 and listing["skipped"]["wide-one"]["vectors"] == 2
    assert listing["skipped"]["wide-one"]["shape"] == 768
    assert set(listing["loaded"]["roundish"]) == {"step", "sd_checkpoint", "sd_checkpoint_name", "shape", "vectors"}
    assert shapes_server.client.post("/sdapi/v1/refresh-embeddings").status_code == 200
