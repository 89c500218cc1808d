"""Real A1111 clients' request sequences, replayed against a live `sdart serve`: the endpoints each calls, the payload
keys and defaults it sends, the response fields it reads. Written from each client's public source:

- webuiapi (the library itself, installed: the calls a script makes with its defaults);
- Open WebUI, backend/open_webui/routers/images.py (verify_url, get_models, set_image_model, image_generations);
- SillyTavern, src/endpoints/stable-diffusion.js and its stable-diffusion extension (ping, samplers, schedulers,
  models, vaes via sd-vae or Forge's sd-modules, get-model, set-model then waiting on /progress, generate with its
  own `url` and `auth` inside the payload, interrupt when the user aborts);
- the Cyanic SD Krita plug-in's SDAPI class (init_api: options, then every list it caches).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import webuiapi
from PIL import Image

from sdart.images.infotext import parse_infotext


def test_webuiapi_script_with_the_librarys_defaults(a1111_server, tiny_model_dir):
    api = webuiapi.WebUIApi(host="127.0.0.1", port=a1111_server.port, steps=2)  # sampler "Euler a", "automatic"
    assert api.util_get_current_model().startswith(tiny_model_dir.name)
    assert tiny_model_dir.name in [m.split(" [")[0] for m in api.util_get_model_names()]
    assert "Euler a" in api.util_get_sampler_names() and "automatic" in api.util_get_scheduler_names()
    assert [v["model_name"] for v in api.get_sd_vae()] == ["tiny-vae.safetensors"]
    assert {s["name"] for s in api.get_prompt_styles()} == {"Cinematic", "Sharp"}
    assert api.get_face_restorers() == [] and api.get_hypernetworks() == [] and api.get_realesrgan_models() == []
    assert api.get_scripts() == {"txt2img": [], "img2img": []} and api.get_cmd_flags()["api"] is True
    assert api.get_memory()["ram"]["total"] > 0
    api.util_wait_for_ready(check_interval=0.1)
    # txt2img with every default webuiapi sends (hires fields, eta 1, s_noise 1, …): all of them A1111's own
    # "nothing asked", so nothing is reported as not applied.
    result = api.txt2img(prompt="a lighthouse", seed=4, width=64, height=64, styles=["Sharp"])
    assert [image.size for image in result.images] == [(64, 64)]
    assert result.info["prompt"] == "a lighthouse, highly detailed" and result.info["all_seeds"] == [4]
    assert "sdart: not applied" not in result.info["extra_generation_params"]
    assert result.parameters["sampler_index"] == "Euler a" and result.parameters["prompt"] == "a lighthouse"
    read = api.png_info(result.images[0])
    assert read.info.startswith("a lighthouse, highly detailed\n") and read.parameters["Seed"] == "4"
    picture = Image.new("RGB", (64, 64), (30, 120, 40))
    redrawn = api.img2img(images=[picture], prompt="a forest", seed=5, width=64, height=64, steps=4,
                          denoising_strength=0.5)
    assert redrawn.images[0].size == (64, 64) and redrawn.info["denoising_strength"] == 0.5
    assert api.get_options()["sd_model_checkpoint"].startswith(tiny_model_dir.name)
    assert api.set_options(api.get_options()) is None  # A1111 answers null


def test_open_webui_image_generation(a1111_server, second_model_dir, tiny_model_dir):
    base = a1111_server.url
    with httpx.Client(timeout=120) as session:
        headers = {"authorization": ""}  # get_automatic1111_api_auth() without auth configured
        # verify_url, then get_models (id = title, name = model_name)
        assert session.get(f"{base}/sdapi/v1/options", headers=headers).status_code == 200
        models = [{"id": m["title"], "name": m["model_name"]}
                  for m in session.get(f"{base}/sdapi/v1/sd-models", headers=headers).json()]
        other = next(m for m in models if m["name"] == second_model_dir.name)
        try:
            # set_image_model: read the options, change the checkpoint, post the whole dict back
            options = session.get(f"{base}/sdapi/v1/options", headers=headers).json()
            if other["id"] != options["sd_model_checkpoint"]:
                options["sd_model_checkpoint"] = other["id"]
                session.post(f"{base}/sdapi/v1/options", json=options, headers=headers).raise_for_status()
            assert session.get(f"{base}/sdapi/v1/options").json()["sd_model_checkpoint"].startswith(
                second_model_dir.name)
            # image_generations: its payload, with AUTOMATIC1111_PARAMS merged in
            data = {"prompt": "a red fox", "batch_size": 2, "width": 64, "height": 64, "steps": 2,
                    "negative_prompt": "blurry", **{"cfg_scale": 6, "sampler_name": "Euler a", "scheduler": "Karras"}}
            res = session.post(f"{base}/sdapi/v1/txt2img", json=data, headers=headers).json()
            images = [base64.b64decode(image) for image in res["images"]]
            assert len(images) == 2 and all(Image.open(io.BytesIO(image)).size == (64, 64) for image in images)
            info = json.loads(res["info"])  # stored as it comes: a JSON string
            assert parse_infotext(info["infotexts"][0]).params["Model"] == second_model_dir.name
        finally:
            session.post(f"{base}/sdapi/v1/options", json={"sd_model_checkpoint": tiny_model_dir.name})


def test_sillytavern_stable_diffusion_extension(a1111_server, tiny_model_dir):
    base = a1111_server.url
    auth = {"Authorization": "Basic " + base64.b64encode(b":").decode()}  # getBasicAuthHeader("") of no auth
    with httpx.Client(timeout=120, headers=auth) as http:
        assert http.get(f"{base}/sdapi/v1/options").status_code == 200  # /ping
        samplers = [x["name"] for x in http.get(f"{base}/sdapi/v1/samplers").json()]
        schedulers = [x["name"] for x in http.get(f"{base}/sdapi/v1/schedulers").json()]
        assert "Euler a" in samplers and "karras" in schedulers
        models = [{"value": x["title"], "text": x["title"]} for x in http.get(f"{base}/sdapi/v1/sd-models").json()]
        vae_lists = [http.get(f"{base}/sdapi/v1/sd-vae"), http.get(f"{base}/sdapi/v1/sd-modules")]
        vaes = [x["model_name"] for x in next(r for r in vae_lists if r.status_code == 200).json()]
        assert vaes == ["tiny-vae.safetensors"]
        current = http.get(f"{base}/sdapi/v1/options").json()["sd_model_checkpoint"]  # /get-model
        assert current == next(m["value"] for m in models if m["value"].startswith(tiny_model_dir.name))
        # /set-model: post the checkpoint, then wait until /progress shows nothing running.
        assert http.post(f"{base}/sdapi/v1/options", json={"sd_model_checkpoint": current}).status_code == 200
        progress = http.get(f"{base}/sdapi/v1/progress").json()
        assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0
        # /generate: A1111 (no forge_preset in options) → forge_additional_modules unset; the body keeps the
        # extension's own `url` and `auth`.
        options = http.get(f"{base}/sdapi/v1/options").json()
        assert "forge_preset" not in options
        body = {"url": base, "auth": "user:pa55word", "prompt": "a cat in a hat", "negative_prompt": "lowres",
                "sampler_name": "DPM++ 2M", "scheduler": "karras", "steps": 2, "cfg_scale": 7, "width": 64,
                "height": 64, "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2,
                "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 8, "clip_skip": 1,
                "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": "tiny-vae.safetensors"},
                "override_settings_restore_afterwards": True, "save_images": True, "send_images": True}
        response = http.post(f"{base}/sdapi/v1/txt2img", content=json.dumps(body),
                             headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        data = response.json()
        params = parse_infotext(Image.open(io.BytesIO(base64.b64decode(data["images"][0]))).info["parameters"]).params
        assert (params["Sampler"], params["Schedule type"], params["VAE"]) == ("DPM++ 2M", "Karras",
                                                                            "tiny-vae.safetensors")
        assert "pa55word" not in response.text and "url" not in data["parameters"]


def test_sillytavern_abort_interrupts_and_gets_the_picture_so_far(a1111_server):
    """The extension posts /interrupt when its user aborts; the pending txt2img answers with what was made."""
    results: dict = {}
    request = {"prompt": "aborted", "steps": 150, "width": 64, "height": 64, "seed": 9}
    thread = threading.Thread(target=lambda: results.update(
        response=a1111_server.client.post("/sdapi/v1/txt2img", json=request)))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and a1111_server.client.get("/sdapi/v1/progress").json()[
            "state"]["sampling_step"] < 3:
        time.sleep(0.05)
    assert a1111_server.client.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(60)
    data = results["response"].json()
    assert len(data["images"]) == 1 and json.loads(data["info"])["interrupted"] is True


def test_cyanic_sd_krita_plugin_init(a1111_server):
    get = a1111_server.client.get
    settings = get("/sdapi/v1/options").json()
    # set_host_version: none of Forge's or SD.Next's own settings → "A1111" (so it asks /sd-vae, not /sd-modules)
    assert not {"forge_preset", "forge_additional_modules", "sd_backend", "sd_lyco"} & set(settings)
    defaults = {"model": settings.get("sd_model_checkpoint", ""), "vae": settings.get("sd_vae", ""),
                "face_restorer": settings.get("face_restoration_model", ""),
                "color_correction": settings.get("img2img_color_correction", True)}
    # A1111's defaults where sdart has nothing of its own (the face-restorer list below is empty)
    assert defaults["vae"] == "Automatic" and defaults["face_restorer"] == "CodeFormer"
    models = get("/sdapi/v1/sd-models").json()
    names = [m["model_name"] for m in models]
    assert all(isinstance(m["title"], str) for m in models) and names
    assert [v["model_name"] for v in get("/sdapi/v1/sd-vae").json()] == ["tiny-vae.safetensors"]
    assert all("name" in s for s in get("/sdapi/v1/samplers").json())
    assert all({"name", "label"} <= set(s) for s in get("/sdapi/v1/schedulers").json())
    assert [r["name"] for r in get("/sdapi/v1/face-restorers").json()] == []
    assert {s["name"] for s in get("/sdapi/v1/prompt-styles").json()} == {"Cinematic", "Sharp"}
    assert get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    assert get("/sdapi/v1/hypernetworks").json() == []
    progress = get("/sdapi/v1/progress").json()
    assert {"progress", "eta_relative", "state", "current_image", "textinfo"} <= set(progress)
