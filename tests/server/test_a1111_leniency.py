"""/sdapi/v1 reads payloads as leniently as A1111's API does, and says every substitution and every field it does
not apply; `parameters` echoes A1111's own fields only. The native API keeps refusing by field name.

Expected behaviour from A1111 1.10: modules/api/api.py (text2imgapi: sampler via get_sampler_and_scheduler, the
`infotext` field), modules/sd_samplers.py (unknown sampler → samplers[0] "DPM++ 2M", unknown schedule → Automatic),
modules/processing.py (an unknown checkpoint override is dropped), modules/styles.py (`{prompt}` or ", " join).
"""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from sdart.images.infotext import parse_infotext

FAST = {"steps": 1, "width": 64, "height": 64}


def _txt2img(server, payload: dict, **kw):
    response = server.client.post("/sdapi/v1/txt2img", json={**FAST, **payload}, **kw)
    assert response.status_code == 200, response.text
    body = response.json()
    return body, json.loads(body["info"])


def _params(body: dict, index: int = 0) -> dict[str, str]:
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][index])))
    return parse_infotext(image.info["parameters"]).params


def test_a_json_body_without_content_type_is_read_as_json(a1111_server):
    payload = json.dumps({**FAST, "prompt": "no header", "seed": 3}).encode()
    response = a1111_server.client.post("/sdapi/v1/txt2img", content=payload, headers={"content-type": ""})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["all_seeds"] == [3]
    # The native API stays strict about what it reads.
    native = a1111_server.client.post("/api/v1/jobs", content=payload, headers={"content-type": "text/plain"})
    assert native.status_code == 422


def test_unknown_sampler_and_schedule_fall_back_as_a1111_and_say_so(a1111_server):
    body, info = _txt2img(a1111_server, {"prompt": "fallback", "sampler_name": "Nonexistent Sampler",
                                         "scheduler": "nonexistent_schedule"})
    assert (info["sampler_name"], info["scheduler"]) == ("DPM++ 2M", "Automatic")
    assert _params(body)["Sampler"] == "DPM++ 2M"
    note = info["extra_generation_params"]["sdart: substituted"]
    assert "Nonexistent Sampler" in note and "nonexistent_schedule" in note
    assert "Nonexistent Sampler" in a1111_server.log()  # and the server log
    # The native API names the field instead.
    native = a1111_server.client.post("/api/v1/jobs", json={**FAST, "sampler_name": "Nonexistent Sampler"})
    assert native.status_code == 422 and native.json()["detail"][0]["loc"] == ["body", "sampler_name"]


def test_a_combined_name_is_split_and_sampler_index_is_read(a1111_server):
    _, info = _txt2img(a1111_server, {"prompt": "split", "sampler_index": "Euler", "sampler_name": None})
    assert info["sampler_name"] == "Euler" and "sdart: substituted" not in info["extra_generation_params"]


def test_what_sdart_does_not_apply_is_named_and_credentials_are_never_echoed(a1111_server):
    payload = {"prompt": "a fox", "restore_faces": True, "tiling": False, "url": "http://127.0.0.1:7860",
               "auth": "user:s3cret-password", "alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "face"}]}},
               "override_settings": {"eta_noise_seed_delta": 31337, "CLIP_stop_at_last_layers": 2},
               "override_settings_restore_afterwards": True}
    body, info = _txt2img(a1111_server, payload)
    notes = info["extra_generation_params"]["sdart: not applied"].split(", ")
    assert {"Face restoration", "ENSD", "ADetailer (alwayson_scripts)", "url", "auth"} <= set(notes)
    assert "Tiling" not in notes  # off is A1111's default: nothing asked
    # The override that sdart knows is applied.
    assert _params(body)["Clip skip"] == "2"
    # `parameters` holds A1111's fields, at their defaults when absent; never keys A1111 does not have.
    assert "url" not in body["parameters"] and "auth" not in body["parameters"]
    assert "s3cret-password" not in json.dumps(body)
    assert body["parameters"]["restore_faces"] is True and body["parameters"]["hr_scale"] == 2.0
    assert body["parameters"]["sampler_index"] == "Euler"


def test_an_unknown_checkpoint_override_is_left_out_and_said(a1111_server, tiny_model_dir):
    body, info = _txt2img(a1111_server, {"prompt": "x", "override_settings": {"sd_model_checkpoint": "no-such.ckpt"}})
    assert _params(body)["Model"] == tiny_model_dir.name
    assert "Model 'no-such.ckpt' (not on this server)" in info["extra_generation_params"]["sdart: not applied"]


def test_styles_apply_as_a1111_applies_them(a1111_server):
    # Cinematic holds {prompt}: the prompt goes in its place; Sharp has none: appended after ", ".
    _, info = _txt2img(a1111_server, {"prompt": "a lighthouse", "negative_prompt": "fog",
                                      "styles": ["Cinematic", "Sharp", "Missing"]})
    assert info["prompt"] == "cinematic still of a lighthouse, film grain, highly detailed"
    assert info["negative_prompt"] == "fog, cartoon, drawing, blurry"
    assert info["styles"] == ["Cinematic", "Sharp", "Missing"]
    assert "style 'Missing' (not in styles.csv)" in info["extra_generation_params"]["sdart: not applied"]
    assert parse_infotext(info["infotexts"][0]).prompt == info["prompt"]


def test_the_infotext_field_fills_what_the_payload_leaves_out(a1111_server):
    text = ("a red barn\nNegative prompt: people\nSteps: 2, Sampler: Euler a, CFG scale: 4.5, Seed: 77, Size: 64x64, "
            "ADetailer model: face_yolov8n.pt, Version: v1.10.1")
    body, info = _txt2img(a1111_server, {"infotext": text, "steps": 1, "cfg_scale": None})
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["steps"]) == ("a red barn", "people", 77, 1)
    assert (info["sampler_name"], info["cfg_scale"]) == ("Euler a", 4.5)  # the payload's steps win over the text's
    assert "ADetailer model" in info["extra_generation_params"]["sdart: not applied"]


def test_png_info_reads_what_the_server_wrote_with_a1111s_size_halves(a1111_server):
    body, _ = _txt2img(a1111_server, {"prompt": "read back", "seed": 12})
    info = a1111_server.client.post("/sdapi/v1/png-info", content=json.dumps({"image": body["images"][0]})).json()
    assert info["parameters"]["Seed"] == "12" and info["parameters"]["Size"] == "64x64"
    assert (info["parameters"]["Size-1"], info["parameters"]["Size-2"]) == ("64", "64")


def test_overrides_last_one_request_unless_restore_afterwards_is_false(a1111_server, second_model_dir, tiny_model_dir):
    # A1111's process_images: override_settings apply to this request and are restored afterwards, unless
    # override_settings_restore_afterwards is false.
    body, _ = _txt2img(a1111_server, {"prompt": "x", "override_settings": {"sd_model_checkpoint": second_model_dir.name}})
    assert _params(body)["Model"] == second_model_dir.name
    body, _ = _txt2img(a1111_server, {"prompt": "x"})
    assert _params(body)["Model"] == tiny_model_dir.name
    try:
        _txt2img(a1111_server, {"prompt": "x", "override_settings": {"CLIP_stop_at_last_layers": 2},
                                "override_settings_restore_afterwards": False})
        body, _ = _txt2img(a1111_server, {"prompt": "x"})
        assert _params(body)["Clip skip"] == "2"
        assert a1111_server.client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    finally:
        a1111_server.client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})


def test_sdart_native_names_on_the_a1111_api_are_named_not_dropped(a1111_server):
    _, info = _txt2img(a1111_server, {"prompt": "x", "model": "whatever"})
    assert "model (sdart's native field" in info["extra_generation_params"]["sdart: not applied"]


def test_a_lora_tag_naming_no_file_is_drawn_without_and_said(a1111_server):
    # A1111 draws without a LoRA it cannot find and notes "Failed to find networks: NAME".
    _, info = _txt2img(a1111_server, {"prompt": "a fox <lora:no_such_lora:0.7>"})
    assert "Failed to find networks: no_such_lora" in info["extra_generation_params"]["sdart: not applied"]
