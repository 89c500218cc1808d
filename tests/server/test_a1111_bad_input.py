"""No bad input makes the server answer 500: every route of the OpenAPI document gets non-finite numbers (as raw
JSON text: `NaN`, `-1e309`), huge numbers, wrong types and broken bodies, and answers a 4xx whose body names the
field (or `body`), or, where it reads nothing of what was sent, anything but a 5xx."""

from __future__ import annotations

import json
import re

import pytest

FAST = {"prompt": "x", "steps": 1, "width": 64, "height": 64}
PICTURE = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEklEQVR4nGP4z8CAFWEXHbQSACj/P8Fu7N9hAAAAAElFTkSuQmCC")
BROKEN_BODIES = [b"{", b"[1, 2", b'"just text"', b"\xff\xfe\x00garbage", b"[" * 5000 + b"]" * 5000,
                 b'{"prompt": "' + b"9" * 5000 + b'"', b'{"steps": ' + b"9" * 5000 + b"}", b"Infinity"]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "-1e309", "1e400"]
# Fields each JSON route applies, with the base payload that makes the rest of the request valid.
BODY_ROUTES = {
    ("post", "/sdapi/v1/txt2img"): (FAST, ["prompt", "negative_prompt", "steps", "cfg_scale", "seed", "width", "height",
                                           "batch_size", "n_iter", "styles", "override_settings", "denoising_strength"]),
    ("post", "/sdapi/v1/img2img"): ({**FAST, "steps": 2, "init_images": [PICTURE]},
                                    ["init_images", "mask", "steps", "cfg_scale", "denoising_strength", "resize_mode",
                                     "mask_blur", "seed", "styles"]),
    ("post", "/api/v1/jobs"): (FAST, ["prompt", "steps", "cfg_scale", "seed", "width", "height", "batch_size",
                                      "n_iter", "sampler_name", "scheduler", "clip_skip", "init_image",
                                      "denoising_strength", "mask", "mask_blur", "vae", "model"]),
    ("post", "/sdapi/v1/options"): ({}, ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"]),
    ("post", "/sdapi/v1/png-info"): ({}, ["image"]),
}
WRONG_VALUES = [[1, 2], {"a": 1}, "text", 10**30, -(10**30), 1e308, True]


def _names_the_field(response, field: str | None) -> bool:
    detail = response.json().get("detail")
    if not isinstance(detail, list) or not detail:
        return False
    locs = [entry["loc"] for entry in detail]
    return any(loc[0] in ("body", "query", "path", "header") and (field is None or field in map(str, loc))
               for loc in locs)


def _routes(server) -> list[tuple[str, str, dict]]:
    spec = server.client.get("/openapi.json").json()
    return [(method, path, operation) for path, methods in spec["paths"].items()
            for method, operation in methods.items()]


def test_every_route_is_covered_and_none_answers_5xx_to_broken_bodies(a1111_server):
    routes = _routes(a1111_server)
    assert ("post", "/sdapi/v1/txt2img") in {(m, p) for m, p, _ in routes}
    for method, path, operation in routes:
        url = re.sub(r"\{[^}]+\}", "0" * 32, path)
        for body in BROKEN_BODIES:
            with a1111_server.client.stream(method.upper(), url, content=body,
                                           headers={"content-type": "application/json"}) as response:
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    assert response.status_code < 500, (method, path, body[:20])
                    continue  # an event stream never ends: its status is the answer
                response.read()
            assert response.status_code < 500, (method, path, body[:20], response.text[:300])
            if (method, path) in BODY_ROUTES:
                assert 400 <= response.status_code < 500 and _names_the_field(response, None), (path, body[:20])


def test_non_finite_numbers_anywhere_in_a_body_are_refused_by_field(a1111_server):
    for (method, path), (base, fields) in BODY_ROUTES.items():
        for field in [*fields, "not_a_field"]:
            for number in NON_FINITE:
                text = json.dumps({**base, field: "__N__"}).replace('"__N__"', number)
                response = a1111_server.client.request(method.upper(), path, content=text,
                                                      headers={"content-type": "application/json"})
                assert 400 <= response.status_code < 500, (path, field, number, response.text[:300])
                assert _names_the_field(response, field), (path, field, number, response.text[:300])
        nested = json.dumps({**base, "override_settings": {"s_noise": "__N__"}}).replace('"__N__"', "NaN")
        response = a1111_server.client.post(path, content=nested, headers={"content-type": "application/json"})
        if path.startswith("/sdapi/v1/t"):
            assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
                "body", "override_settings", "s_noise"]


@pytest.mark.parametrize("route", list(BODY_ROUTES), ids=[path for _, path in BODY_ROUTES])
def test_huge_numbers_and_wrong_types_in_applied_fields_are_refused_by_field(a1111_server, route):
    method, path = route
    base, fields = BODY_ROUTES[route]
    for field in fields:
        for value in WRONG_VALUES:
            if isinstance(value, str) and field in ("prompt", "negative_prompt", "sampler_name", "scheduler",
                                                    "sd_model_checkpoint", "sd_vae", "model"):
                continue  # text is what these fields hold
            response = a1111_server.client.request(method.upper(), path, json={**base, field: value})
            assert response.status_code < 500, (path, field, value, response.text[:300])
            if response.status_code >= 400:
                assert _names_the_field(response, field), (path, field, value, response.text[:300])
            else:  # accepted: only where A1111 accepts it too (a bool for an int field, a number for a name)
                assert isinstance(value, bool) or field in ("sampler_name", "scheduler", "override_settings") or (
                    path.endswith("options")), (path, field, value)


def test_query_and_path_parameters_are_refused_by_name(a1111_server):
    for method, path, operation in _routes(a1111_server):
        for parameter in operation.get("parameters", []):
            for value in ["NaN", "-1e309", "x" * 3000, "-5", "../../etc/passwd"]:
                url = re.sub(r"\{[^}]+\}", "0" * 32, path)
                params = {}
                if parameter["in"] == "path":
                    url = path.replace("{" + parameter["name"] + "}", value).replace("{image_id:path}", value)
                    url = re.sub(r"\{[^}]+\}", "0" * 32, url)
                else:
                    params[parameter["name"]] = value
                response = a1111_server.client.request(method.upper(), url, params=params)
                assert response.status_code < 500, (method, path, parameter["name"], value, response.text[:300])


def test_img2img_with_too_few_steps_for_its_strength_is_refused_by_steps(a1111_server):
    # diffusers (like A1111) runs int(steps × denoising_strength) steps of an img2img: 1 × 0.75 runs none.
    response = a1111_server.client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [PICTURE], "steps": 1})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "steps"] and "at least 2 steps" in detail["msg"]
