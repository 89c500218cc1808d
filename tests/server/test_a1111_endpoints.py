"""A1111's list, settings and housekeeping endpoints in A1111's shapes (modules/api/models.py: SDVaeItem,
PromptStyleItem, MemoryResponse, …), with sdart's real content; `/options` with A1111's full key set
(modules/shared_options.py) and a working `sd_vae`."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from sdart.images.infotext import parse_infotext

FAST = {"steps": 1, "width": 64, "height": 64, "seed": 21, "prompt": "vae test"}


def _pixels_and_params(body: dict) -> tuple[bytes, dict[str, str]]:
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    return image.convert("RGB").tobytes(), parse_infotext(image.info["parameters"]).params


def test_list_endpoints_answer_in_a1111_shapes(a1111_server):
    get = a1111_server.client.get
    assert get("/sdapi/v1/sd-vae").json() == [{"model_name": "tiny-vae.safetensors", "filename": "tiny-vae.safetensors"}]
    assert get("/sdapi/v1/sd-modules").json() == get("/sdapi/v1/sd-vae").json()  # Forge's name for the list
    assert get("/sdapi/v1/prompt-styles").json() == [
        {"name": "Cinematic", "prompt": "cinematic still of {prompt}, film grain", "negative_prompt": "cartoon, drawing"},
        {"name": "Sharp", "prompt": "highly detailed", "negative_prompt": "blurry"}]
    for empty in ("face-restorers", "realesrgan-models", "hypernetworks", "script-info", "extensions"):
        response = get(f"/sdapi/v1/{empty}")
        assert response.status_code == 200 and response.json() == [], empty
    memory = get("/sdapi/v1/memory").json()
    assert 0 < memory["ram"]["used"] < memory["ram"]["total"] and memory["ram"]["free"] > 0
    assert memory["cuda"] == {"error": "unavailable"}  # CPU-only machine, as A1111 says it
    flags = get("/sdapi/v1/cmd-flags").json()
    assert flags["api"] is True and flags["port"] == a1111_server.port and flags["api_auth"] is None
    assert "vae_dir" in flags and flags["vae_dir"] is None and len(flags) > 100  # A1111's every flag; no paths


def test_housekeeping_endpoints(a1111_server):
    post = a1111_server.client.post
    for path in ("refresh-checkpoints", "refresh-vae", "reload-checkpoint"):
        assert post(f"/sdapi/v1/{path}").status_code == 200, path
    unload = post("/sdapi/v1/unload-checkpoint")
    assert unload.status_code == 200 and "stays loaded" in unload.headers["x-sdart-not-applied"]


def test_options_has_a1111s_every_key_and_takes_the_whole_dict_back(a1111_server, tiny_model_dir):
    client = a1111_server.client
    options = client.get("/sdapi/v1/options").json()
    assert len(options) >= 324  # A1111 1.10's settings with the built-in extensions'
    assert options["sd_model_checkpoint"].startswith(tiny_model_dir.name) and options["sd_vae"] == "Automatic"
    assert options["samples_format"] == "png" and options["CLIP_stop_at_last_layers"] == 1
    assert options["eta_noise_seed_delta"] == 0 and options["emphasis"] == "Original"  # A1111's defaults
    # Posting it all back (as Open WebUI and SillyTavern do) changes nothing and names nothing.
    same = client.post("/sdapi/v1/options", json=options)
    assert same.status_code == 200 and "x-sdart-not-applied" not in same.headers
    # A setting sdart applies becomes the default of later requests; one it does not is kept and named.
    changed = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2, "show_progressbar": False,
                                                     "samples_format": "jpg", "no_such_setting": 1})
    assert changed.headers["x-sdart-not-applied"] == "show_progressbar, samples_format, no_such_setting"
    try:
        assert client.get("/sdapi/v1/options").json()["show_progressbar"] is False
        body = client.post("/sdapi/v1/txt2img", json=FAST).json()
        assert _pixels_and_params(body)[1]["Clip skip"] == "2"
    finally:
        client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1, "show_progressbar": True})
    bad = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 99})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "CLIP_stop_at_last_layers"]


def test_sd_vae_override_decodes_with_that_vae_for_one_request(a1111_server):
    client = a1111_server.client
    plain, plain_params = _pixels_and_params(client.post("/sdapi/v1/txt2img", json=FAST).json())
    response = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"sd_vae": "tiny-vae.safetensors"}})
    other, other_params = _pixels_and_params(response.json())
    assert other != plain and other_params["VAE"] == "tiny-vae.safetensors" and "VAE" not in plain_params
    # A1111 restores overridden settings afterwards: the next request decodes with the model's own VAE again.
    again, _ = _pixels_and_params(client.post("/sdapi/v1/txt2img", json=FAST).json())
    assert again == plain
    missing = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"sd_vae": "nope.pt"}}).json()
    assert "VAE 'nope.pt' (not in the VAE folder)" in json.loads(missing["info"])["extra_generation_params"][
        "sdart: not applied"]


def test_sd_vae_option_switches_the_vae_until_switched_back(a1111_server):
    client = a1111_server.client
    plain, _ = _pixels_and_params(client.post("/sdapi/v1/txt2img", json=FAST).json())
    try:
        assert client.post("/sdapi/v1/options", json={"sd_vae": "tiny-vae.safetensors"}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_vae"] == "tiny-vae.safetensors"
        switched, params = _pixels_and_params(client.post("/sdapi/v1/txt2img", json=FAST).json())
        assert switched != plain and params["VAE"] == "tiny-vae.safetensors"
    finally:
        assert client.post("/sdapi/v1/options", json={"sd_vae": "Automatic"}).status_code == 200
    assert _pixels_and_params(client.post("/sdapi/v1/txt2img", json=FAST).json())[0] == plain
    bad = client.post("/sdapi/v1/options", json={"sd_vae": "../../etc/passwd"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "sd_vae"]
    # The native API takes a VAE by its name in the folder, never a path.
    native = client.post("/api/v1/jobs", json={**FAST, "vae": "/etc/passwd"})
    assert native.status_code == 422 and native.json()["detail"][0]["loc"] == ["body", "vae"]
