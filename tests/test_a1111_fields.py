"""The one list of what sdart applies (sdart.a1111_fields): A1111 payload fields, settings and infotext keys.

Field names, defaults and infotext keys are A1111 1.10's (modules/processing.py dataclasses, modules/api/models.py,
the paste fields in modules/ui.py and modules/processing_scripts/*.py, OptionInfo infotext labels in
modules/shared_options.py).
"""

from __future__ import annotations

from pathlib import Path

from sdart import a1111_fields as fields
from sdart.request import GenerationRequest


def test_every_request_field_is_applied_and_every_a1111_field_is_known():
    assert all(fields.is_applied(name) for name in GenerationRequest.model_fields)
    # A1111 1.10's txt2img API fields (StableDiffusionProcessingTxt2Img + the API's own), all in the one list.
    txt2img = {"prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
               "seed_resize_from_w", "sampler_name", "scheduler", "batch_size", "n_iter", "steps", "cfg_scale",
               "width", "height", "restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid", "eta",
               "denoising_strength", "s_min_uncond", "s_churn", "s_tmax", "s_tmin", "s_noise", "override_settings",
               "override_settings_restore_afterwards", "refiner_checkpoint", "refiner_switch_at",
               "disable_extra_networks", "firstpass_image", "comments", "enable_hr", "firstphase_width",
               "firstphase_height", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
               "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
               "force_task_id", "sampler_index", "script_name", "script_args", "send_images", "save_images",
               "alwayson_scripts", "infotext"}
    assert set(fields.TXT2IMG_FIELDS) == txt2img
    assert {"init_images", "mask", "inpainting_fill", "inpaint_full_res", "include_init_images"} <= set(
        fields.IMG2IMG_FIELDS)


def test_a_payload_names_what_it_asks_that_sdart_does_not_do():
    payload = {"prompt": "x", "restore_faces": True, "tiling": False, "eta": 1.0, "s_noise": 1, "s_churn": 0,
               "enable_hr": False, "hr_scale": 4, "sampler_index": "Euler", "my_token": "s3cret",
               "alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "face_yolov8n.pt"}]}, "ControlNet": {"args": []}}}
    notes = fields.payload_not_applied(payload)
    assert "Face restoration" in notes and "ADetailer (alwayson_scripts)" in notes and "my_token" in notes
    # A1111's own defaults ask for nothing (tiling off, eta 1, s_noise 1, hires off so hr_scale is moot, ControlNet
    # with no units); the unknown key is named, never its value.
    assert not {"Tiling", "Eta", "Sigma noise", "Sigma churn", "Hires upscale", "ControlNet (alwayson_scripts)"} & set(notes)
    assert "s3cret" not in " ".join(notes)


def test_inpainting_defaults_that_differ_from_what_sdart_does_are_named():
    # A1111's API inpaints with inpainting_fill=0 ("fill") and inpaint_full_res=True ("Only masked") unless told;
    # sdart inpaints "original" content on the whole picture.
    assert fields.payload_not_applied({"mask": "m", "init_images": ["i"]}, img2img=True) == ["Masked content",
                                                                                              "Inpaint area"]
    assert fields.payload_not_applied({"mask": "m", "inpainting_fill": 1, "inpaint_full_res": False},
                                      img2img=True) == []
    assert fields.payload_not_applied({"init_images": ["i"]}, img2img=True) == []  # no mask: nothing to inpaint


def test_settings_map_to_request_fields_or_are_named():
    mapped, notes = fields.options_to_fields({"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "m [abc]",
                                              "eta_noise_seed_delta": 31337, "samples_format": "png",
                                              "not_a_setting": 1})
    assert mapped == {"clip_skip": 2, "model": "m [abc]"}
    assert notes == ["ENSD", "not_a_setting"]  # ENSD: its infotext label; samples_format png is A1111's default



def test_options_json_is_read_once_for_the_settings_and_their_infotext_keys(monkeypatch):
    fields._options_file.cache_clear()
    fields.option_infotext_keys.cache_clear()
    read: list[str] = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda path, *a, **kw: read.append(path.name) or read_text(path, *a, **kw))
    assert fields.a1111_options()["eta_noise_seed_delta"] == 0
    assert fields.option_infotext_keys()["ENSD"] == "eta_noise_seed_delta"
    assert fields.options_to_fields({"eta_noise_seed_delta": 31337}) == ({}, ["ENSD"])
    assert read.count("options.json") == 1

def test_infotext_keys_to_fields_and_the_ones_not_applied():
    params = {"Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7.5", "Seed": "123",
              "Size": "512x768", "Model hash": "6ce0161689", "Model": "v1-5", "Clip skip": "2",
              "Face restoration": "CodeFormer", "ADetailer model": "face_yolov8n.pt", "ENSD": "31337",
              "RP Active": "False", "Version": "v1.10.1", "Lora hashes": "add_detail: 7c6bad76eb54"}
    request = fields.infotext_fields(params)
    assert request == {"steps": 20, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 7.5, "seed": 123,
                       "width": 512, "height": 768, "model": "v1-5", "clip_skip": 2}
    # Descriptive keys (hashes, version) and a feature written as off ask nothing; the rest is named.
    assert fields.infotext_not_applied(params, request) == ["Face restoration", "ADetailer model", "ENSD"]


def test_keys_that_need_another_field_count_only_with_it():
    params = {"Denoising strength": "0.5", "Mask blur": "4", "Steps": "20"}
    assert fields.infotext_not_applied(params, {"steps": 20}) == ["Denoising strength", "Mask blur"]
    assert fields.infotext_not_applied(params, {"steps": 20, "init_image": "x.png", "mask": "m.png"}) == []


def test_setting_keys_count_when_the_rerun_writes_the_same():
    params = {"Steps": "4", "Step cache": "3", "Token downsampling": "2", "RNG": "CPU"}
    assert fields.infotext_not_applied(params, {}, {"Step cache": "3", "RNG": "CPU"}) == ["Token downsampling"]


def test_a_field_added_to_the_request_under_its_a1111_name_is_applied_everywhere(monkeypatch):
    """The single source: giving GenerationRequest a `restore_faces` field is all it takes."""
    known = fields.request_field_names() | {"restore_faces"}
    monkeypatch.setattr(fields, "request_field_names", lambda: known)
    assert fields.is_applied("restore_faces")
    assert "Face restoration" not in fields.payload_not_applied({"restore_faces": True})
    assert fields.infotext_fields({"Face restoration": "CodeFormer"}) == {"restore_faces": True}
    assert fields.infotext_not_applied({"Face restoration": "CodeFormer"}, {"restore_faces": True}) == []
    # Hires fix: with the fields in the request, an infotext's hires keys turn it on (A1111's paste rule).
    hires = known | {"enable_hr", "hr_scale", "hr_upscaler"}
    monkeypatch.setattr(fields, "request_field_names", lambda: hires)
    got = fields.infotext_fields({"Denoising strength": "0.45", "Hires upscale": "2", "Hires upscaler": "Latent"})
    assert set(got) == {"denoising_strength", "hr_scale", "hr_upscaler", "enable_hr"} and got["enable_hr"] is True
    assert fields.infotext_not_applied({"Hires upscale": "2"}, got) == []
