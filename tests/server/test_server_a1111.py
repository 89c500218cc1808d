"""The A1111-compatible API, through the `webuiapi` client library unchanged and with plain HTTP."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
import webuiapi
from PIL import Image

from sdart.images.infotext import parse_infotext


@pytest.fixture
def api(live_server) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=live_server.port, sampler="Euler a", steps=2)


def test_webuiapi_txt2img(api, tiny_model_dir):
    result = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=99, width=64, height=64,
                         batch_size=2, n_iter=1, cfg_scale=5)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    info = result.info
    assert info["all_seeds"] == [99, 100] and info["seed"] == 99
    assert info["prompt"] == "a lighthouse" and info["all_prompts"] == ["a lighthouse"] * 2
    assert (info["width"], info["height"], info["steps"], info["cfg_scale"]) == (64, 64, 2, 5.0)
    assert info["sampler_name"] == "Euler a" and info["sd_model_name"] == tiny_model_dir.name
    for image, infotext, seed in zip(result.images, info["infotexts"], info["all_seeds"]):
        assert image.info["parameters"] == infotext
        assert parse_infotext(infotext).params["Seed"] == str(seed)
    assert result.parameters["prompt"] == "a lighthouse" and result.parameters["seed"] == 99


def test_a1111_defaults_and_unknown_fields(live_server):
    # A payload as A1111's own UI scripts send it: hires fix, scripts, extensions' fields. All ignored.
    payload = {"prompt": "defaults", "steps": 1, "width": 64, "height": 64, "enable_hr": False, "hr_scale": 2,
               "styles": [], "alwayson_scripts": {"ControlNet": {"args": []}}, "script_args": [], "tiling": False,
               "override_settings": {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337},
               "sampler_name": None, "scheduler": None, "send_images": True, "save_images": False}
    response = live_server.client.post("/sdapi/v1/txt2img", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    parameters = parse_infotext(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).info["parameters"]).params
    # A1111's defaults where the payload is silent: sampler Euler, CFG 7; clip skip from override_settings.
    assert parameters["Sampler"] == "Euler" and parameters["CFG scale"] == "7" and parameters["Clip skip"] == "2"

    no_images = live_server.client.post("/sdapi/v1/txt2img", json={**payload, "send_images": False}).json()
    assert no_images["images"] == [] and '"all_seeds"' in no_images["info"]


def test_progress_and_interrupt(live_server):
    results = {}
    thread = threading.Thread(target=lambda: results.update(response=live_server.client.post(
        "/sdapi/v1/txt2img", json={"prompt": "interrupted", "steps": 100, "n_iter": 2, "width": 64, "height": 64})))
    thread.start()
    deadline = time.monotonic() + 60
    progress = {}
    while time.monotonic() < deadline:
        progress = live_server.client.get("/sdapi/v1/progress").json()
        if progress["state"]["job_no"] == 1 and progress["state"]["sampling_step"] >= 2:
            break
        time.sleep(0.05)
    assert 0.5 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 100
    assert progress["eta_relative"] > 0 and progress["state"]["job_count"] >= 1
    # The live preview: a PNG at latent size (1/8 of the 64² image per side), or nothing when the client skips it.
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.format == "PNG" and preview.size == (8, 8)
    assert live_server.client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()[
        "current_image"] is None
    assert live_server.client.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(30)
    response = results["response"]
    assert response.status_code == 200
    # As A1111's interrupt: the first batch was finished before it; the second stops at its current step and is
    # decoded as it is, so the answer holds both (A1111's sampler returns its last latents when interrupted).
    body = response.json()
    assert len(body["images"]) == 2 and '"interrupted": true' in body["info"]
    partial = Image.open(io.BytesIO(base64.b64decode(body["images"][1])))
    seed = json.loads(body["info"])["all_seeds"][1]
    whole = live_server.client.post("/sdapi/v1/txt2img", json={"prompt": "interrupted", "steps": 100, "seed": seed,
                                                               "width": 64, "height": 64}).json()["images"][0]
    assert partial.tobytes() != Image.open(io.BytesIO(base64.b64decode(whole))).tobytes()
    assert live_server.client.get("/sdapi/v1/progress").json()["progress"] == 0.0


def test_lists_options_and_model_switch(api, live_server, tiny_model_dir, second_model_dir):
    titles = [model["title"] for model in api.get_sd_models()]
    assert titles[0].startswith(tiny_model_dir.name) and second_model_dir.name in titles
    assert "DPM++ 2M" in [s["name"] for s in api.get_samplers()]
    assert "karras" in api.util_get_scheduler_names()
    assert api.get_options()["sd_model_checkpoint"].startswith(tiny_model_dir.name)
    try:
        api.util_set_model(second_model_dir.name)
        assert api.util_get_current_model().startswith(second_model_dir.name)
        result = api.txt2img(prompt="switched", seed=1, width=64, height=64)
        assert parse_infotext(result.info["infotexts"][0]).params["Model"] == second_model_dir.name
    finally:
        api.set_options({"sd_model_checkpoint": tiny_model_dir.name})
    assert api.util_get_current_model().startswith(tiny_model_dir.name)
    response = live_server.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "/etc/passwd"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "sd_model_checkpoint"]


def test_png_info(api, live_server):
    made = api.txt2img(prompt="read me back", seed=5, width=64, height=64)
    buffer = io.BytesIO()
    made.images[0].save(buffer, format="PNG", pnginfo=None)  # PIL drops text chunks: an image without them
    plain = base64.b64encode(buffer.getvalue()).decode()
    raw = live_server.client.post("/sdapi/v1/txt2img", json={"prompt": "read me back", "seed": 5, "steps": 2,
                                                             "width": 64, "height": 64}).json()["images"][0]
    info = live_server.client.post("/sdapi/v1/png-info", json={"image": f"data:image/png;base64,{raw}"}).json()
    assert info["info"].startswith("read me back\n") and info["parameters"]["Seed"] == "5"
    assert info["parameters"]["Prompt"] == "read me back"
    assert live_server.client.post("/sdapi/v1/png-info", json={"image": plain}).json()["info"] == ""


def test_webuiapi_img2img_redraws_the_picture_and_stores_it_once(api, live_server):
    picture = Image.new("RGB", (96, 64), (200, 30, 30))
    result = api.img2img(images=[picture], prompt="a red field", seed=11, width=64, height=64, steps=10,
                         denoising_strength=0.5, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["denoising_strength"] == 0.5 and result.info["all_seeds"] == [11, 12]
    params = parse_infotext(result.info["infotexts"][0]).params
    assert params["Denoising strength"] == "0.5" and params["Steps"] == "10"
    assert "init_images" not in result.parameters and "init_image" not in result.parameters  # no server paths
    # The same picture again: the same images, and one stored input.
    again = api.img2img(images=[picture], prompt="a red field", seed=11, width=64, height=64, steps=10,
                        denoising_strength=0.5, batch_size=2)  # the same batch: CPU matmuls round by batch size
    assert list(again.images[0].getdata()) == list(result.images[0].getdata())  # same seed, same picture
    assert len(list((live_server.data_dir / "inputs").glob("*.png"))) == 1
    # The picture is what the run starts from: another picture, same everything else, gives another result.
    other = api.img2img(images=[Image.new("RGB", (96, 64), (30, 70, 230))], prompt="a red field", seed=11, width=64,
                        height=64, steps=10, denoising_strength=0.5)
    assert list(other.images[0].getdata()) != list(result.images[0].getdata())


def test_img2img_refusal_leaves_no_stored_input(live_server):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    before = set((live_server.data_dir / "inputs").glob("*"))
    response = live_server.client.post("/sdapi/v1/img2img", json={
        "prompt": "x", "width": 64, "height": 64, "steps": 2, "denoising_strength": 2,
        "init_images": [base64.b64encode(buffer.getvalue()).decode()]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "denoising_strength"
    assert set((live_server.data_dir / "inputs").glob("*")) == before


def test_native_api_reads_no_server_paths(live_server, tmp_path):
    elsewhere = tmp_path / "server-side.png"
    Image.new("RGB", (8, 8)).save(elsewhere)  # a real picture the server could read, outside its inputs
    response = live_server.client.post("/api/v1/jobs", json={"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                                             "init_image": str(elsewhere)})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == "init_image" and "/sdapi/v1/img2img" in detail["msg"]


def test_webuiapi_inpainting_keeps_the_picture_outside_the_mask(api):
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    picture.paste((30, 70, 230), (0, 0, 64, 20))  # two colours, so "kept" is not just one flat colour
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # redraw the right half
    result = api.img2img(images=[picture], mask_image=mask, prompt="a blue door", seed=5, width=64, height=64,
                         steps=4, denoising_strength=1.0, mask_blur=4)
    out = result.images[0].convert("RGB")
    assert [out.getpixel((x, y)) for x in (2, 12) for y in (5, 40)] == [picture.getpixel((x, y)) for x in (2, 12)
                                                                        for y in (5, 40)]
    assert parse_infotext(result.info["infotexts"][0]).params["Mask blur"] == "4"
    assert "mask" not in result.parameters  # uploads are not echoed back


def test_txt2img_hires_fix_returns_the_hires_size_and_names_a_missing_upscaler(live_server):
    # As webuiapi and A1111's UI send hires fix: enable_hr and the hr_ fields beside the first pass's size.
    payload = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 5, "enable_hr": True,
               "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic)", "hr_second_pass_steps": 1,
               "denoising_strength": 0.6}
    response = live_server.client.post("/sdapi/v1/txt2img", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.size == (96, 96)
    params = parse_infotext(image.info["parameters"]).params
    assert (params["Hires upscale"], params["Hires upscaler"], params["Hires steps"]) == ("1.5", "Latent (bicubic)", "1")
    assert params["Size"] == "64x64" and params["Denoising strength"] == "0.6"  # the first pass's size, as A1111
    assert "Hires" not in json.loads(body["info"])["extra_generation_params"].get("sdart: not applied", "")
    # An upscaler model this server lacks is refused before anything runs, naming the field (A1111: "could not
    # find upscaler named …").
    missing = live_server.client.post("/sdapi/v1/txt2img", json={**payload, "hr_upscaler": "R-ESRGAN 4x+"})
    assert missing.status_code == 422 and "hr_upscaler" in missing.text and "R-ESRGAN 4x+" in missing.text


def test_txt2img_info_reports_the_variation_seeds_each_image_took(live_server):
    payload = {"prompt": "a lighthouse", "steps": 1, "width": 64, "height": 64, "seed": 5, "batch_size": 2,
               "subseed": 40, "subseed_strength": 0.5, "seed_resize_from_w": 0}
    response = live_server.client.post("/sdapi/v1/txt2img", json=payload)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    # A1111: with a variation strength every image keeps the seed and the subseed counts up.
    assert (info["all_seeds"], info["all_subseeds"], info["subseed"]) == ([5, 5], [40, 41], 40)
    assert info["subseed_strength"] == 0.5 and info["seed_resize_from_w"] == 0
