import pytest
from PIL import Image

from sdart.images.infotext import format_infotext, hashes_value, parse_infotext, png_info, read_infotext
from sdart.request import GenerationRequest

BASE = dict(steps=25, sampler_name="DPM++ 2M Karras", scheduler="Automatic", cfg_scale=7.0, seed=42, width=512,
            height=768, model_name="stable-diffusion-v1-5", model_hash="6ce0161689", version="sdart 0.1.0")

PROMPTS = [
    ("a fox", ""),
    ("a fox, in the snow, (masterpiece:1.2)", "blurry, lowres"),
    ("line one\nline two: with colon", "neg one\nneg two, comma"),
    ("renard dans la neige 🦊, 雪の中の狐", "ничего плохого"),
    ('a "quoted" word, and \\backslash', ""),
    ("", "only a negative"),
]


@pytest.mark.parametrize("prompt, negative", PROMPTS)
def test_write_then_parse_round_trips(prompt, negative):
    text = format_infotext(prompt=prompt, negative_prompt=negative, **BASE)
    parsed = parse_infotext(text)
    assert parsed.prompt == prompt
    assert parsed.negative_prompt == negative
    assert parsed.params["Model hash"] == "6ce0161689"
    fields = parsed.request_fields()
    assert GenerationRequest.parse(fields) == GenerationRequest.parse(
        prompt=prompt, negative_prompt=negative, steps=25, sampler_name="DPM++ 2M Karras", cfg_scale=7, seed=42,
        width=512, height=768)


def test_format_matches_a1111_layout():
    text = format_infotext(prompt="a fox", negative_prompt="ugly", clip_skip=2, **BASE)
    assert text == (
        "a fox\nNegative prompt: ugly\n"
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: 6ce0161689, "
        "Model: stable-diffusion-v1-5, Clip skip: 2, Version: sdart 0.1.0"
    )


def test_values_with_separators_are_json_quoted():
    text = format_infotext(prompt="p", negative_prompt="", **{**BASE, "model_name": "C:/models/a, b"})
    assert 'Model: "C:/models/a, b"' in text
    assert parse_infotext(text).params["Model"] == "C:/models/a, b"



def test_hashes_are_written_as_a1111_writes_ti_and_lora_hashes():
    """`name: hash, …` (TI hashes and Lora hashes alike): `:` and `,` leave the names, a name is written once."""
    assert hashes_value([("add_detail", "7c6bad76eb54"), ("style:v2, ink", "0123abcd4567"),
                         ("add_detail", "7c6bad76eb54")]) == "add_detail: 7c6bad76eb54, stylev2 ink: 0123abcd4567"
    assert hashes_value([]) is None
    ti_hashes = hashes_value({"myemb": "339cc9210f70"}.items())
    line = format_infotext(prompt="a fox", negative_prompt="", **BASE, extra={"TI hashes": ti_hashes})
    assert parse_infotext(line).params["TI hashes"] == "myemb: 339cc9210f70"

def test_parses_an_infotext_written_by_a1111():
    a1111 = (
        "masterpiece, best quality, 1girl, (colorful:1.3)\n"
        "Negative prompt: (worst quality:2), lowres\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3456789012, Size: 512x768, "
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "add_detail: 7c6bad76eb54", '
        "Version: v1.10.1"
    )
    parsed = parse_infotext(a1111)
    assert parsed.prompt == "masterpiece, best quality, 1girl, (colorful:1.3)"
    assert parsed.negative_prompt == "(worst quality:2), lowres"
    assert parsed.params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    request = GenerationRequest.parse(parsed.request_fields())
    assert (request.sampler_name, request.scheduler, request.cfg_scale, request.seed) == ("DPM++ 2M", "Karras", 7.5, 3456789012)


def test_text_without_parameter_line_is_all_prompt():
    parsed = parse_infotext("just a prompt\nsecond line")
    assert parsed.prompt == "just a prompt\nsecond line" and parsed.params == {}


def test_png_chunk_round_trip_keeps_unicode(tmp_path):
    text = format_infotext(prompt="狐 🦊, snow", negative_prompt="", **BASE)
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(text))
    assert read_infotext(path) == text
    assert read_infotext(Image.new("RGB", (8, 8))) is None
