"""`sdart upscale` and A1111's postprocessing step: sizes, the second upscaler, and the infotext kept and extended
with the keys A1111 writes (scripts/postprocessing_upscale.py, modules/postprocessing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdart.cli.app import app
from sdart.images.infotext import add_parameters, png_info
from sdart.upscalers.extras import ExtrasUpscale, Runner, extras_upscale, png_texts
from sdart.upscalers.files import UpscalerError
from sdart.upscalers.tiny import save_tiny_upscaler

INFOTEXT = "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 48x32"


def picture(width: int = 48, height: int = 32) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscalers")
    save_tiny_upscaler(root / "ESRGAN" / "4x-tiny.pth", "ESRGAN")
    (root / "ESRGAN" / "broken.pth").write_bytes(b"\x00not a model")
    return root


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "fox.png"
    picture().save(path, pnginfo=png_info(INFOTEXT, {"Software": "sdart"}))
    return path


def run(*args: str):
    return CliRunner().invoke(app, ["upscale", *args])


def test_upscale_writes_the_picture_bigger_with_its_infotext_extended(models, png, tmp_path):
    result = run(str(png), "--upscaler", "4x-tiny", "--scale", "4", "--upscaler-dir", str(models),
                 "--tile", "32", "--overlap", "8", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "fox-x4.png") as out:
        assert out.size == (192, 128)
        texts = dict(out.info)
    line = "Postprocess upscale by: 4, Postprocess upscaler: 4x-tiny"
    assert texts["parameters"] == f"{INFOTEXT}, {line}"  # kept byte for byte, A1111's keys added
    assert texts["postprocessing"] == texts["extras"] == line  # where A1111's extras tab writes them
    assert texts["Software"] == "sdart"  # the picture's other texts stay


def test_upscale_to_a_size_crops_to_it_and_never_overwrites(models, png, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        result = run(str(png), "-u", "Lanczos", "--width", "100", "--height", "100", "-o", str(out))
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["fox-100x100-2.png", "fox-100x100.png"]
    with Image.open(out / "fox-100x100.png") as image:
        assert image.size == (100, 100)
        assert image.info["postprocessing"] == ("Postprocess upscale to: 100x100, Postprocess crop to: 100x100, "
                                                "Postprocess upscaler: Lanczos")
    result = run(str(png), "-u", "Nearest", "--height", "80", "-o", str(out))  # one side: the factor that reaches it
    assert result.exit_code == 0, result.output
    with Image.open(out / "fox-x2.5.png") as image:
        assert image.size == (120, 80)


@pytest.mark.parametrize(("args", "message"), [
    (["-u", "nope"], "--upscaler: upscaler 'nope': no such upscaler"),
    (["-u", "Lanczos", "--upscaler-2", "nope"], "--upscaler-2: upscaler 'nope'"),
    (["-u", "None"], "--upscaler None: does nothing"),
    (["-u", "Lanczos", "--scale", "2", "--width", "64"], "--scale: give a scale or --width/--height, not both"),
    (["-u", "Lanczos", "--tile", "8"], "upscaler_tile = 8: use 0 (no tiles) or at least 16 pixels"),
])
def test_bad_options_exit_2_naming_the_option(models, png, tmp_path, args, message):
    result = run(str(png), *args, "--upscaler-dir", str(models), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_file_that_is_not_an_upscaler_is_named(models, png, tmp_path):
    result = run(str(png), "-u", "broken", "--upscaler-dir", str(models), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "broken.pth: not a model file spandrel can read" in " ".join(result.output.split())


def test_a_missing_picture_is_named_before_any_work(tmp_path, png):
    result = run(str(png), str(tmp_path / "missing.png"), "-u", "Lanczos", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "missing.png" in result.output and "no such file" in result.output
    assert not (tmp_path / "out" / "fox-x4.png").exists()


def test_the_second_upscaler_is_blended_at_its_visibility():
    image = picture()
    step = ExtrasUpscale("Lanczos", upscaler_2="Nearest", upscaler_2_visibility=0.25, scale=2)
    result, info = extras_upscale(image, step, Runner())
    expected = Image.blend(image.resize((96, 64), Image.Resampling.LANCZOS),
                           image.resize((96, 64), Image.Resampling.NEAREST), 0.25)
    assert result == expected
    assert list(info) == ["Postprocess upscale by", "Postprocess upscaler", "Postprocess upscaler 2"]


def test_to_a_size_without_crop_covers_the_box():
    """A1111: scale by the larger of the two ratios; without crop the picture is left larger than the box."""
    result, info = extras_upscale(picture(48, 32), ExtrasUpscale("Lanczos", resize_mode=1, width=96, height=96,
                                                                 crop=False), Runner())
    assert result.size == (144, 96) and info == {"Postprocess upscale to": "96x96", "Postprocess upscaler": "Lanczos"}


def test_upscaler_none_leaves_the_picture_and_records_nothing():
    image = picture()
    assert extras_upscale(image, ExtrasUpscale("None", scale=4), Runner()) == (image, {})
    with pytest.raises(UpscalerError, match="upscaler_2 = 'Nearest' would not be applied") as caught:
        extras_upscale(image, ExtrasUpscale("None", upscaler_2="Nearest", upscaler_2_visibility=1), Runner())
    assert caught.value.field == "upscaler_1"


def test_keys_already_on_the_line_get_the_new_value_in_place():
    text = add_parameters(INFOTEXT, {"Postprocess upscale by": 2})
    again = add_parameters(text, {"Postprocess upscale by": "4", "Postprocess upscaler": "x, y"})
    assert again == f'{INFOTEXT}, Postprocess upscale by: 4, Postprocess upscaler: "x, y"'
    assert add_parameters("\nSteps: 4, Seed: 1, Size: 8x8", {"A": 1}) == "\nSteps: 4, Seed: 1, Size: 8x8, A: 1"
    with pytest.raises(ValueError, match="no parameters line"):
        add_parameters("just a prompt", {"A": 1})


def test_a_picture_without_parameters_gets_only_the_postprocessing_texts():
    info = {"Postprocess upscale by": "2", "Postprocess upscaler": "Lanczos"}
    texts = png_texts({"dpi": (72, 72), "Title": "photo"}, info)
    assert texts == {"Title": "photo", "postprocessing": "Postprocess upscale by: 2, Postprocess upscaler: Lanczos",
                     "extras": "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"}
