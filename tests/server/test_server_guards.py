"""Malformed requests, limits, auth, CORS and the bind check: each refusal a clear 4xx naming what is wrong,
and the server healthy after all of them."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import webuiapi
from typer.testing import CliRunner

OK = {"prompt": "fine", "steps": 2, "width": 64, "height": 64}
NOT_PNG = base64.b64encode(b"just some text, not an image").decode()
TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8ISfHgA0wYRUdtBIA0MoBFD5jqJkAAAAASUVORK5CYII="

# (name, method, path, body: dict | str | None, expected status, what the error must name)
MALFORMED = [
    ("prompt not a string", "POST", "/api/v1/jobs", {**OK, "prompt": 5}, 422, "prompt"),
    ("steps not a number", "POST", "/api/v1/jobs", {**OK, "steps": "many"}, 422, "steps"),
    ("steps zero", "POST", "/api/v1/jobs", {**OK, "steps": 0}, 422, "steps"),
    ("steps over max_steps", "POST", "/api/v1/jobs", {**OK, "steps": 21}, 422, "steps"),
    ("cfg negative", "POST", "/api/v1/jobs", {**OK, "cfg_scale": -1}, 422, "cfg_scale"),
    ("width not multiple of 8", "POST", "/api/v1/jobs", {**OK, "width": 100}, 422, "width"),
    ("width over max_side", "POST", "/api/v1/jobs", {**OK, "width": 256}, 422, "width"),
    ("height negative", "POST", "/api/v1/jobs", {**OK, "height": -8}, 422, "height"),
    ("seed below -1", "POST", "/api/v1/jobs", {**OK, "seed": -2}, 422, "seed"),
    ("seed too big", "POST", "/api/v1/jobs", {**OK, "seed": 2**63}, 422, "seed"),
    ("too many images", "POST", "/api/v1/jobs", {**OK, "batch_size": 3, "n_iter": 2}, 422, "batch_size"),
    ("unknown sampler", "POST", "/api/v1/jobs", {**OK, "sampler_name": "Euler z"}, 422, "sampler_name"),
    ("hires upscaler not here", "POST", "/api/v1/jobs", {**OK, "enable_hr": True, "hr_upscaler": "4x-UltraSharp"},
     422, "hr_upscaler"),
    ("unknown refiner", "POST", "/api/v1/jobs", {**OK, "refiner_checkpoint": "sdxl-refiner"}, 422,
     "refiner_checkpoint"),
    ("schedule the sampler lacks", "POST", "/api/v1/jobs", {**OK, "sampler_name": "PLMS", "scheduler": "Karras"},
     422, "scheduler"),
    ("unknown field", "POST", "/api/v1/jobs", {**OK, "hires": True}, 422, "hires"),
    ("prompt over max_prompt_chars", "POST", "/api/v1/jobs", {**OK, "prompt": "x" * 101}, 422, "prompt"),
    ("model path", "POST", "/api/v1/jobs", {**OK, "model": "/etc/passwd"}, 422, "model"),
    ("body not JSON", "POST", "/api/v1/jobs", "{not json", 422, "body"),
    ("body a list", "POST", "/api/v1/jobs", "[1, 2]", 422, "body"),
    ("huge body", "POST", "/api/v1/jobs", {**OK, "prompt": "x" * 100_000}, 413, "body"),
    ("a1111 steps not a number", "POST", "/sdapi/v1/txt2img", {**OK, "steps": "x"}, 422, "steps"),
    ("a1111 width not multiple of 8", "POST", "/sdapi/v1/txt2img", {**OK, "width": 12}, 422, "width"),
    ("a1111 override_settings not an object", "POST", "/sdapi/v1/txt2img", {**OK, "override_settings": "x"}, 422,
     "override_settings"),
    ("a1111 body a string", "POST", "/sdapi/v1/txt2img", '"draw a cat"', 422, "body"),
    ("png-info bad base64", "POST", "/sdapi/v1/png-info", {"image": "%%% not base64 %%%"}, 422, "image"),
    ("png-info not an image", "POST", "/sdapi/v1/png-info", {"image": NOT_PNG}, 422, "image"),
    ("png-info no image", "POST", "/sdapi/v1/png-info", {}, 422, "image"),
    ("img2img no init_images", "POST", "/sdapi/v1/img2img", {**OK}, 422, "init_images"),
    ("img2img init image not base64", "POST", "/sdapi/v1/img2img", {**OK, "init_images": ["%%%"]}, 422, "0"),
    ("img2img init image not an image", "POST", "/sdapi/v1/img2img", {**OK, "init_images": [NOT_PNG]}, 422, "0"),
    ("img2img mask not an image", "POST", "/sdapi/v1/img2img", {**OK, "init_images": [TINY_PNG], "mask": NOT_PNG},
     422, "mask"),
    ("img2img mask blur negative", "POST", "/sdapi/v1/img2img", {**OK, "init_images": [TINY_PNG], "mask": TINY_PNG,
                                                                 "mask_blur": -1}, 422, "mask_blur"),
    ("native mask is a server path", "POST", "/api/v1/jobs", {**OK, "init_image": "data:image/png;base64," + TINY_PNG,
                                                              "mask": "/etc/hostname"}, 422, "mask"),
    ("img2img strength 0", "POST", "/sdapi/v1/img2img", {**OK, "init_images": [TINY_PNG], "denoising_strength": 0},
     422, "denoising_strength"),
    ("native init_image is a server path", "POST", "/api/v1/jobs", {**OK, "init_image": "/etc/hostname"}, 422,
     "init_image"),
    ("options unknown model", "POST", "/sdapi/v1/options", {"sd_model_checkpoint": "../../x.ckpt"}, 422,
     "sd_model_checkpoint"),
    ("job id not hex", "GET", "/api/v1/jobs/not-an-id", None, 422, "job_id"),
    ("job id unknown", "DELETE", "/api/v1/jobs/" + "0" * 32, None, 404, "job_id"),
    ("cancel unknown job", "POST", "/api/v1/jobs/" + "0" * 32 + "/cancel", None, 404, "job_id"),
    ("history text too long", "GET", "/api/v1/jobs?q=" + "x" * 201, None, 422, "q"),
    ("switch to an unknown model", "POST", "/api/v1/model", {"name": "../../x.ckpt"}, 422, "name"),
    ("png info of no picture", "POST", "/api/v1/png-info", {"image": "bm90IGEgcGljdHVyZQ=="}, 422, "image"),
    ("image id path traversal", "GET", "/api/v1/images/..%2F..%2Fjobs.sqlite3", None, 422, "image_id"),
    ("image id absolute path", "GET", "/api/v1/images/%2Fetc%2Fpasswd", None, 422, "image_id"),
    ("image id unknown", "GET", "/api/v1/images/" + "f" * 32, None, 404, "image_id"),
    ("history limit zero", "GET", "/api/v1/jobs?limit=0", None, 422, "limit"),
    ("history unknown status", "GET", "/api/v1/jobs?status=lost", None, 422, "status"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "status", "field"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_malformed_request_is_refused_naming_the_field(strict_server, name, method, path, body, status, field):
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    response = strict_server.client.request(method, path, content=content,
                                            headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    named = [error["loc"][-1] for error in detail] + [error["msg"] for error in detail]
    assert any(field == item or f"{field}:" in str(item) for item in named), detail
    assert all(error["msg"] for error in detail)


def test_server_is_healthy_after_malformed_requests(strict_server):
    for _, method, path, body, *_ in MALFORMED:
        strict_server.client.request(method, path, json=body if isinstance(body, dict) else None)
    assert strict_server.client.get("/api/v1/health").json()["status"] == "ok"
    assert strict_server.wait(strict_server.submit(prompt="still works", steps=2))["status"] == "succeeded"


def test_auth_required_except_health(strict_server, api_key):
    anonymous = httpx.Client(base_url=strict_server.url)
    assert anonymous.get("/api/v1/health").status_code == 200
    for method, path in [("GET", "/"), ("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/sdapi/v1/sd-models"),
                         ("POST", "/sdapi/v1/txt2img"), ("GET", "/docs"), ("GET", "/static/app.js")]:
        response = anonymous.request(method, path, json=OK)
        assert response.status_code == 401, (method, path)
        assert response.json()["detail"][0]["loc"] == ["header", "Authorization"]
        assert "Basic" in response.headers["www-authenticate"]  # the browser asks for the key
    wrong = anonymous.get("/api/v1/jobs", headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401 and "wrong credentials" in wrong.json()["detail"][0]["msg"]
    assert anonymous.get("/api/v1/jobs", auth=("anyone", api_key)).status_code == 200


def test_a1111_client_with_basic_auth(strict_server, api_key):
    api = webuiapi.WebUIApi(host="127.0.0.1", port=strict_server.port, username="me", password=api_key, steps=2)
    result = api.txt2img(prompt="authorised", width=64, height=64, seed=3)
    assert result.images[0].size == (64, 64) and result.info["all_seeds"] == [3]


def test_full_queue_answers_429_with_retry_after(strict_server):
    running = strict_server.submit(prompt="keeps the worker busy", steps=20, n_iter=4)
    strict_server.wait(running, until=lambda job: job["status"] == "running")
    queued = [strict_server.submit(prompt=f"queued {i}", steps=1) for i in range(3)]  # max_queue = 3
    response = strict_server.client.post("/api/v1/jobs", json=OK)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert "queue is full" in response.json()["detail"][0]["msg"]
    for job_id in [*queued, running]:
        strict_server.client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert strict_server.wait(running)["status"] == "cancelled"
    assert strict_server.client.post("/api/v1/jobs", json=OK).status_code == 202


def test_cors_only_for_configured_origins(strict_server, live_server):
    preflight = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(f"{strict_server.url}/api/v1/jobs", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    other = httpx.options(f"{strict_server.url}/api/v1/jobs", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # Not configured: no CORS headers at all.
    plain = httpx.get(f"{live_server.url}/api/v1/health", headers={"Origin": "http://allowed.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_binding_beyond_loopback_needs_an_api_key(tiny_model_dir):
    from sdart.cli.app import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "needs an API key" in result.output and "--api-key" in result.output
