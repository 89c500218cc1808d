"""The native API end to end, against a real `sdart serve` process on the tiny model."""

from __future__ import annotations

import base64
import io

from PIL import Image

from sdart.images.infotext import parse_infotext


def test_job_runs_and_its_images_carry_their_parameters(live_server):
    response = live_server.client.post("/api/v1/jobs", json={"prompt": "a red fox", "negative_prompt": "blur",
                                                             "steps": 2, "seed": 1234, "batch_size": 2, "n_iter": 2,
                                                             "width": 64, "height": 64, "sampler_name": "Euler"})
    assert response.status_code == 202
    created = response.json()
    assert set(created) == {"id", "status", "position"}
    assert len(created["id"]) == 32 and created["status"] == "queued" and isinstance(created["position"], int)

    job = live_server.wait(created["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["seeds"] == [1234, 1235, 1236, 1237]
    assert [image["position"] for image in job["images"]] == [0, 1, 2, 3]
    assert job["progress"] == 1.0 and job["error"] is None and job["attempts"] == 1

    for record in job["images"]:
        response = live_server.client.get(record["url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.size == (64, 64)
        parsed = parse_infotext(image.info["parameters"])
        assert image.info["parameters"] == record["infotext"]
        assert (parsed.prompt, parsed.negative_prompt) == ("a red fox", "blur")
        assert parsed.params["Seed"] == str(record["seed"]) and parsed.params["Sampler"] == "Euler"
        assert parsed.params["Steps"] == "2" and parsed.params["Size"] == "64x64"


def test_sse_reports_start_every_step_each_image_and_the_end(live_server):
    # A job ahead keeps ours queued while we subscribe, so the stream must show its whole life.
    blocker = live_server.submit(prompt="ahead", steps=40)
    job_id = live_server.submit(prompt="watched", steps=3, n_iter=2, seed=7)
    events = live_server.events(job_id)
    names = [name for name, _ in events]

    assert names[0] == "status" and events[0][1]["status"] == "queued" and events[0][1]["position"] >= 1
    assert names[1:] == ["started", "progress", "progress", "progress", "image",
                         "progress", "progress", "progress", "image", "done"]
    steps = [(data["iteration"], data["step"], data["total"]) for name, data in events if name == "progress"]
    assert steps == [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 3), (1, 2, 3), (1, 3, 3)]
    fractions = [data["fraction"] for name, data in events if name == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    images = [data for name, data in events if name == "image"]
    assert [(i["position"], i["seed"]) for i in images] == [(0, 7), (1, 8)]
    done = events[-1][1]
    assert done["status"] == "succeeded" and done["images"] == [i["id"] for i in images]
    assert live_server.job(blocker)["status"] == "succeeded"

    # A finished job's stream says so at once.
    assert [name for name, _ in live_server.events(job_id)] == ["status", "done"]


def test_cancel_queued_job_and_running_job(live_server):
    running = live_server.submit(prompt="long", steps=150)
    queued = live_server.submit(prompt="never runs", steps=2)
    after = live_server.submit(prompt="runs after the cancels", steps=2)
    live_server.wait(running, until=lambda job: job["status"] == "running" and (job["step"] or 0) >= 2)

    response = live_server.client.post(f"/api/v1/jobs/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    response = live_server.client.post(f"/api/v1/jobs/{running}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelling"

    stopped = live_server.wait(running, timeout=10)
    assert stopped["status"] == "cancelled" and stopped["images"] == []
    never = live_server.job(queued)
    assert never["status"] == "cancelled" and never["started_at"] is None and never["images"] == []
    # The worker goes on with the next job.
    assert live_server.wait(after)["status"] == "succeeded"
    # Cancelling a finished job changes nothing.
    response = live_server.client.post(f"/api/v1/jobs/{after}/cancel")
    assert response.json()["status"] == "succeeded" and live_server.job(after)["status"] == "succeeded"


def test_history_is_newest_first_and_paged(live_server):
    ids = [live_server.submit(prompt=f"history {i}", steps=1) for i in range(3)]
    live_server.wait(ids[-1])
    first = live_server.client.get("/api/v1/jobs", params={"limit": 2}).json()
    second = live_server.client.get("/api/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert [job["id"] for job in first["jobs"]] == ids[::-1][:2]
    assert second["jobs"][0]["id"] == ids[0]
    assert first["next_offset"] == 2 and first["total"] == second["total"] >= 3
    succeeded = live_server.client.get("/api/v1/jobs", params={"status": "succeeded", "limit": 200}).json()
    assert all(job["status"] == "succeeded" for job in succeeded["jobs"])


def test_health_models_samplers(live_server, tiny_model_dir, second_model_dir):
    health = live_server.client.get("/api/v1/health").json()
    assert health["status"] == "ok" and set(health["queue"]) >= {"queued", "running", "succeeded"}
    models = live_server.client.get("/api/v1/models").json()
    assert [m["name"] for m in models][:2] == [tiny_model_dir.name, second_model_dir.name]
    samplers = live_server.client.get("/api/v1/samplers").json()
    assert "DPM++ 2M" in [s["name"] for s in samplers["samplers"]] and "Karras" in samplers["schedule_types"]
    assert live_server.client.get("/docs").status_code == 200
    assert "/api/v1/jobs" in live_server.client.get("/openapi.json").json()["paths"]


def test_live_preview_while_running_and_none_before_or_after(live_server):
    running = live_server.submit(prompt="previewed", steps=150)
    queued = live_server.submit(prompt="waits its turn", steps=1)
    live_server.wait(running, until=lambda job: job["status"] == "running" and job["progress"] > 0)
    response = live_server.client.get(f"/api/v1/jobs/{running}/preview")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(response.content)).size == (8, 8)  # latent size: 64 px / 8
    assert live_server.client.get(f"/api/v1/jobs/{queued}/preview").status_code == 204  # not started
    live_server.client.post(f"/api/v1/jobs/{running}/cancel")
    live_server.wait(running)
    assert live_server.client.get(f"/api/v1/jobs/{running}/preview").status_code == 204  # ended
    unknown = "0" * 32
    missing = live_server.client.get(f"/api/v1/jobs/{unknown}/preview")
    assert missing.status_code == 404 and unknown in missing.text


def test_img2img_job_with_a_data_url_picture(live_server):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 160, 40)).save(buffer, format="PNG")
    picture = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    job_id = live_server.submit(prompt="a green field", steps=4, seed=9, init_image=picture, denoising_strength=0.5)
    job = live_server.wait(job_id)
    assert job["status"] == "succeeded", job
    stored = job["request"]["init_image"]
    assert "/" not in stored and (live_server.data_dir / "inputs" / stored).is_file()  # a name, never a path
    assert parse_infotext(job["images"][0]["infotext"]).params["Denoising strength"] == "0.5"
