"""The infotext reader against what real PNGs hold: JSON values, NUL bytes, CRLF, big seeds, wrapped parameters,
EXIF UserComment in JPEG/WebP. Expected values are the text's own (what A1111 wrote, read back whole)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from sdart.images.infotext import parse_infotext, parse_parameters, read_infotext


def test_bare_json_values_are_kept_whole_and_leak_no_keys():
    # d3x-at/sd-parsers tests/test_automatic1111.py test_hashes: `Hashes` written as a bare JSON object (A1111 ≥1.4).
    text = ("photo of a duck\nNegative prompt: monochrome\nSteps: 15, Sampler: UniPC, CFG scale: 5, Seed: 235284042, "
            'Size: 512x400, Model hash: c0d1994c73, Model: realistic_realisticVisionV20_v20, '
            'Hashes: {"vae": "c6a580b13a", "embed:bad, hands": "abc", "model": "c0d1994c73"}')
    parsed = parse_infotext(text)
    assert parsed.params["Hashes"] == '{"vae": "c6a580b13a", "embed:bad, hands": "abc", "model": "c0d1994c73"}'
    assert parsed.json_value("Hashes") == {"vae": "c6a580b13a", "embed:bad, hands": "abc", "model": "c0d1994c73"}
    assert list(parsed.params) == ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Hashes"]


def test_json_lists_objects_and_quoted_values_side_by_side():
    line = ('Steps: 28, Civitai resources: [{"type":"lora","weight":0.8,"modelName":"Detailer, Illustrious"}], '
            'Civitai metadata: {"remixOfId":12345}, Lora hashes: "add_detail: 7c6bad76eb54, more: 01", Model hash: '
            '{"sha": 1}, Version: v1.10.1')
    params = parse_parameters(line)
    assert params == {"Steps": "28", "Civitai resources": '[{"type":"lora","weight":0.8,"modelName":"Detailer, Illustrious"}]',
                      "Civitai metadata": '{"remixOfId":12345}', "Lora hashes": "add_detail: 7c6bad76eb54, more: 01",
                      "Model hash": '{"sha": 1}', "Version": "v1.10.1"}


def test_json_quoted_without_escaping_is_kept_whole():
    # albertpb/sd-manager src/__tests__/utils/mocks/automatic1111.mock.ts: FreeU writes its JSON inside bare quotes.
    params = parse_parameters('Steps: 30, FreeU Stages: "[{"backbone_factor": 1.2, "skip_factor": 0.9}]", '
                              'FreeU Schedule: "0.0, 1.0, 0.0", FreeU Version: 2')
    assert params == {"Steps": "30", "FreeU Stages": '[{"backbone_factor": 1.2, "skip_factor": 0.9}]',
                      "FreeU Schedule": "0.0, 1.0, 0.0", "FreeU Version": "2"}


def test_nul_bytes_and_crlf():
    parsed = parse_infotext("a fox\x00, snow\r\nNegative prompt: blur\x00ry\r\nline two\r\n"
                            "Steps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64\r\n")
    assert (parsed.prompt, parsed.negative_prompt) == ("a fox, snow", "blurry\nline two")
    assert parsed.request_fields()["steps"] == 4 and "\x00" not in parsed.prompt
    assert parse_infotext("old mac\rSteps: 4, Sampler: Euler, Seed: 2").params["Seed"] == "2"


@pytest.mark.parametrize("seed", ["4294967296", "18446744073709551615", "280823642470253"])
def test_seeds_of_any_size_are_kept(seed):
    parsed = parse_infotext(f"p\nSteps: 20, Sampler: Euler a, Seed: {seed}, Size: 512x512")
    assert parsed.params["Seed"] == seed and parsed.request_fields()["seed"] == int(seed)


def test_keys_in_any_order_and_short_lines_starting_with_steps():
    # Civitai writes CFG scale before Sampler and lowercase keys; some writers leave out all but two keys.
    parsed = parse_infotext("a\nSteps: 28, CFG scale: 5.5, Sampler: Euler a, Seed: 987654321, workflow: txt2img, "
                            "Size: 832x1216, draft: false")
    assert parsed.request_fields() == {"prompt": "a", "negative_prompt": "", "steps": 28, "cfg_scale": 5.5,
                                      "sampler_name": "Euler a", "seed": 987654321, "width": 832, "height": 1216}
    assert parse_infotext("Prompt\nSteps: 20, Size: 512x512").params == {"Steps": "20", "Size": "512x512"}


def test_parameters_wrapped_over_several_lines():
    # SD.Next wraps long parameter lines (a reader project's SD.Next sample).
    text = ("masterpiece, girl,\nupper body, monochrome\nNegative prompt: low quality\n"
            "Steps: 20, Size: 1312x1408, Seed: 1561296656, CFG scale: 6,\n"
            "CFG rescale: 0.7, Model: hassakuXLIllustrious_v21fix, Model hash: 847403d47a,\n"
            "App: SD.Next, Version: 8b73cb6, Pipeline: StableDiffusionXLPipeline,\n"
            "Operations: txt2img, LoRA networks: outline_xl_kohaku_delta_spv5x")
    parsed = parse_infotext(text)
    assert parsed.prompt == "masterpiece, girl,\nupper body, monochrome" and parsed.negative_prompt == "low quality"
    assert parsed.params["CFG rescale"] == "0.7" and parsed.params["LoRA networks"] == "outline_xl_kohaku_delta_spv5x"
    assert len(parsed.params) == 12


def test_a_prompt_line_that_looks_like_pairs_stays_prompt():
    parsed = parse_infotext("style: anime, mood: dark\nSteps: 20, Sampler: Euler, Seed: 3")
    assert parsed.prompt == "style: anime, mood: dark" and parsed.params["Seed"] == "3"
    # Without a parameter line (A1111's rule: at least three pairs), everything is prompt.
    assert parse_infotext("just: a prompt\nwith: colons").params == {}


def _jpeg_with_comment(text: str, encoding: str, fmt: str = "JPEG") -> Image.Image:
    exif = Image.Exif()
    prefix = b"UNICODE\x00" if encoding.startswith("utf-16") else b"ASCII\x00\x00\x00"
    exif[0x8769] = {0x9286: prefix + text.encode(encoding)}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, fmt, exif=exif)
    buffer.seek(0)
    return Image.open(buffer)


@pytest.mark.parametrize("encoding, fmt", [("utf-16-be", "JPEG"), ("utf-16-le", "JPEG"), ("ascii", "JPEG"),
                                           ("utf-16-be", "WEBP")])
def test_exif_user_comment_of_jpeg_and_webp(encoding, fmt):
    # A1111 saves JPEG/WebP parameters as EXIF UserComment via piexif ("UNICODE\0" + UTF-16BE); Civitai likewise.
    text = "a green tree frog\nSteps: 9, Sampler: Euler, CFG scale: 1, Seed: 2214950711, Size: 832x1216"
    assert read_infotext(_jpeg_with_comment(text, encoding, fmt)) == text


def test_png_text_chunk_wins_and_plain_images_have_none(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "p\nSteps: 1, Sampler: Euler, Seed: 1")
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert read_infotext(path).startswith("p\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.jpg")
    assert read_infotext(tmp_path / "plain.jpg") is None
