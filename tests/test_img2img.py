"""img2img (`init_image`, `denoising_strength`, `resize_mode`) on the bundled shapes model, whose VAE and UNet are
trained, so "kept the picture" and "followed the prompt" can be read off the output with the shapes checker."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from training.shapes_data import check_image, draw
from typer.testing import CliRunner

from sdart.cli.app import app
from sdart.images.infotext import parse_infotext, read_infotext
from sdart.images.initimage import default_size, fit, open_init_image, picture_size

RED_CIRCLE = {"color": "red", "shape": "circle", "bg": "blue"}
GREEN_SQUARE = {"color": "green", "shape": "square", "bg": "yellow"}


@pytest.fixture(scope="module")
def shapes_engine():
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine("builtin:shapes", settings=Settings(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def red_circle(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "red-circle.png"
    Image.fromarray(draw("red", "circle", "blue", 36, 32, 32)).save(path)
    return path


def _found(image) -> dict:
    return {k: v for k, v in check_image(image, RED_CIRCLE)["found"].items() if k in ("color", "shape", "bg")}


def _mean_diff(image, path) -> float:
    return float(np.abs(np.asarray(image, np.float32) - np.asarray(Image.open(path), np.float32)).mean())


def test_strength_decides_how_much_of_the_picture_is_redrawn(shapes_engine, red_circle):
    def run(prompt, strength, cfg):
        return shapes_engine.generate(prompt=prompt, init_image=str(red_circle), denoising_strength=strength,
                                      cfg_scale=cfg, steps=20, seed=3, progress=False)

    # Its own prompt: the picture comes back through the VAE nearly unchanged.
    same = run("a red circle on blue", 0.6, 1.0).images[0]
    assert _found(same) == RED_CIRCLE and _mean_diff(same, red_circle) < 6
    # Another prompt: a light touch keeps the picture, full strength draws the prompt.
    light = run("a green square on yellow", 0.1, 1.0).images[0]
    assert _found(light) == RED_CIRCLE and _mean_diff(light, red_circle) < 6
    full = run("a green square on yellow", 1.0, 7.0).images[0]
    assert check_image(full, GREEN_SQUARE)["all_ok"], check_image(full, GREEN_SQUARE)["found"]


def test_img2img_runs_the_strength_share_of_the_steps_and_records_it(shapes_engine, red_circle):
    totals = []
    result = shapes_engine.generate(prompt="a red circle on blue", init_image=str(red_circle), denoising_strength=0.3,
                                    steps=20, seed=1, on_step=lambda p: totals.append(p.total))
    assert set(totals) == {6} and len(totals) == 6  # as A1111: int(20 × 0.3) steps, from the matching noise level
    params = parse_infotext(result.infotexts[0]).params
    assert params["Steps"] == "20" and params["Denoising strength"] == "0.3" and params["Size"] == "64x64"


def test_size_follows_the_picture_unless_given(shapes_engine, tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (96, 64), (30, 70, 230)).save(wide)
    assert shapes_engine.generate(prompt="x", init_image=str(wide), steps=2, seed=0,
                                  progress=False).images[0].size == (64, 40)  # 3:2 at the model's 64 px
    assert shapes_engine.generate(prompt="x", init_image=str(wide), width=32, height=32, steps=2, seed=0,
                                  progress=False).images[0].size == (32, 32)
    assert default_size((1024, 768), 512) == (512, 384) and default_size((10, 1000), 512) == (8, 512)


def test_resize_modes_stretch_crop_and_fill():
    # Left half red, right half blue, 2:1; fitted into a square.
    picture = Image.new("RGB", (200, 100), (255, 0, 0))
    picture.paste((0, 0, 255), (100, 0, 200, 100))
    stretched, cropped, filled = (np.asarray(fit(picture, 50, 50, mode)) for mode in (0, 1, 2))
    assert all(a.shape == (50, 50, 3) for a in (stretched, cropped, filled))
    assert tuple(stretched[25, 5]) == (255, 0, 0) and tuple(stretched[25, 45]) == (0, 0, 255)
    # Crop keeps the middle 100×100 at full height: still half red, half blue, edge at the centre.
    assert tuple(cropped[0, 5]) == (255, 0, 0) and tuple(cropped[49, 45]) == (0, 0, 255)
    # Fill: the whole picture at 50×25 in the middle band, the stretched picture above and below it.
    assert tuple(filled[25, 2]) == (255, 0, 0) and tuple(filled[25, 47]) == (0, 0, 255)
    assert tuple(filled[2, 2]) == (255, 0, 0) and tuple(filled[47, 47]) == (0, 0, 255)


def test_cli_init_image_writes_the_strength_and_refuses_a_missing_file(red_circle, tmp_path):
    out = tmp_path / "out"
    common = ["--model", "builtin:shapes", "--device", "cpu", "--steps", "4", "--seed", "2", "-o", str(out)]
    result = CliRunner().invoke(app, ["generate", "a red circle on blue", "--init-image", str(red_circle),
                                      "--strength", "0.5", *common])
    assert result.exit_code == 0, result.output
    (png,) = out.iterdir()
    assert parse_infotext(read_infotext(png)).params["Denoising strength"] == "0.5"

    missing = CliRunner().invoke(app, ["generate", "x", "--init-image", str(tmp_path / "nope.png"), *common])
    assert missing.exit_code == 2 and "init_image = " in missing.stderr and "no such file" in missing.stderr
    weak = CliRunner().invoke(app, ["generate", "x", "--init-image", str(red_circle), "--strength", "0", *common])
    assert weak.exit_code == 2 and "denoising_strength = 0" in weak.stderr
    assert len(list(out.iterdir())) == 1  # nothing written by the refused runs


def test_a_huge_picture_is_refused_before_it_is_decoded(tmp_path):
    from sdart.request import GenerationRequest, RequestError

    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 6_000)).save(huge)  # 60 MP, a few kB on disk
    with pytest.raises(RequestError, match=r"init_image = .*10000×6000 picture is over the 50 megapixel limit"):
        GenerationRequest.parse(prompt="x", init_image=str(huge))


def test_inpainting_redraws_under_the_mask_and_keeps_the_rest(shapes_engine, red_circle, tmp_path):
    right_half = tmp_path / "right-half.png"
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    mask.save(right_half)
    original = np.asarray(Image.open(red_circle), np.int32)

    def inpaint(**options):
        result = shapes_engine.generate(prompt="a green square on yellow", init_image=str(red_circle),
                                        mask=str(right_half), denoising_strength=1.0, steps=20, seed=3,
                                        progress=False, **options)
        return result, np.asarray(result.images[0], np.int32)

    result, out = inpaint()
    # Away from the blurred edge (a Gaussian of radius 4: 4σ = 16 px), the kept half is the original to the pixel.
    assert (out[:, :16] == original[:, :16]).all()
    assert np.abs(out[:, 40:] - original[:, 40:]).mean() > 50
    assert parse_infotext(result.infotexts[0]).params["Mask blur"] == "4"
    # Inverted, the roles swap.
    _, inverted = inpaint(inpainting_mask_invert=True, mask_blur=0)
    assert (inverted[:, 32:] == original[:, 32:]).all() and np.abs(inverted[:, :32] - original[:, :32]).mean() > 50


def test_cli_mask_needs_a_picture(tmp_path, red_circle):
    result = CliRunner().invoke(app, ["generate", "x", "--mask", str(red_circle), "--model", "builtin:shapes",
                                      "--device", "cpu", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "mask: inpainting needs the picture to paint into (init_image)" in result.stderr


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_header_size_is_the_upright_size(tmp_path, orientation):
    """The size read from the header (for the default output size) is the size of the picture as decoded and
    turned upright by its EXIF orientation; a data: URL reads the same as its file."""
    import base64

    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    Image.new("RGB", (96, 64), (200, 30, 30)).save(path, exif=exif)
    upright = open_init_image(str(path)).size
    assert upright == ((64, 96) if orientation in (6, 8) else (96, 64))
    assert picture_size(str(path)) == upright
    data_url = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
    assert picture_size(data_url) == upright and open_init_image(data_url).size == upright
