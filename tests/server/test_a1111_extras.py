"""A1111's Extras API: /sdapi/v1/extra-single-image, extra-batch-images, upscalers and latent-upscale-modes, in
the shapes of A1111's modules/api/models.py, driven also through the `webuiapi` client A1111 users script with."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdart.images.infotext import png_info
from sdart.upscalers.tiny import save_tiny_upscaler

INFOTEXT = "a blue square\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 40x24"


@pytest.fixture(scope="module")
def upscaler_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscalers")
    save_tiny_upscaler(root / "ESRGAN" / "4x-tiny.pth", "ESRGAN")
    save_tiny_upscaler(root / "RealESRGAN" / "RealESRGAN_x2plus.safetensors", "SPAN")  # A1111: "R-ESRGAN 2x+"
    (root / "ESRGAN" / "readme.pth").write_text("not a model")
    (root / "Stable-diffusion").mkdir()  # A1111's models/ layout: not an upscalers folder, skipped
    save_tiny_upscaler(root / "Stable-diffusion" / "model.safetensors", "SPAN")
    return root


@pytest.fixture(scope="module")
def client(tiny_engine, upscaler_dir, tmp_path_factory):
    from sdart.server.app import create_app
    from sdart.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu", dtype="float32",
                        upscaler_dir=upscaler_dir, upscaler_tile=32, upscaler_overlap=8)
    with TestClient(create_app(settings, tiny_engine)) as client:
        yield client


def b64_png(width: int, height: int, infotext: str | None = INFOTEXT) -> str:
    rng = np.random.default_rng(width)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(infotext) if infotext else None)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_upscalers_are_listed_in_a1111s_order_and_shape(client):
    items = client.get("/sdapi/v1/upscalers").json()
    assert [item["name"] for item in items] == ["None", "Lanczos", "Nearest", "4x-tiny", "readme", "RealESRGAN_x2plus"]
    assert all(set(item) == {"name", "model_name", "model_path", "model_url", "scale"} for item in items)
    tiny = items[3]
    assert tiny == {"name": "4x-tiny", "model_name": "4x-tiny", "model_path": "ESRGAN/4x-tiny.pth", "model_url": None,
                    "scale": 4}


def test_latent_upscale_modes_are_a1111s(client):
    assert client.get("/sdapi/v1/latent-upscale-modes").json() == [
        {"name": "Latent"}, {"name": "Latent (antialiased)"}, {"name": "Latent (bicubic)"},
        {"name": "Latent (bicubic antialiased)"}, {"name": "Latent (nearest)"}, {"name": "Latent (nearest-exact)"}]


def test_single_image_by_a_model_has_the_asked_size_and_carries_the_infotext(client):
    response = client.post("/sdapi/v1/extra-single-image",
                           json={"image": b64_png(40, 24), "upscaler_1": "4x-tiny", "upscaling_resize": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"html_info", "image"}
    line = "Postprocess upscale by: 3, Postprocess upscaler: 4x-tiny"
    assert body["html_info"] == f"<p>{line}</p>"
    image = decoded(body["image"])
    assert image.size == (120, 72)  # a 4× model asked for 3×: run once, then Lanczos down (A1111)
    assert image.info["parameters"] == f"{INFOTEXT}, {line}" and image.info["postprocessing"] == line


def test_batch_to_a_size_crops_each_picture_to_it(client):
    pictures = [{"data": "data:image/png;base64," + b64_png(40, 24), "name": "a.png"},
                {"data": b64_png(30, 30, None), "name": "b.png"}]
    response = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": pictures, "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 60,
        "upscaler_1": "R-ESRGAN 2x+", "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"html_info", "images"}
    assert [decoded(b64).size for b64 in body["images"]] == [(100, 60), (100, 60)]
    assert body["html_info"] == ("<p>Postprocess upscale to: 100x60, Postprocess crop to: 100x60, "
                                 "Postprocess upscaler: R-ESRGAN 2x+, Postprocess upscaler 2: Lanczos</p>")


def test_upscaler_none_returns_the_picture_unchanged(client):
    response = client.post("/sdapi/v1/extra-single-image", json={"image": b64_png(40, 24)})  # A1111's defaults
    assert response.status_code == 200, response.text
    assert decoded(response.json()["image"]).size == (40, 24) and response.json()["html_info"] == "<p></p>"



def test_a_picture_is_opened_as_img2img_opens_one_upright_rgb_with_its_texts(client):
    """One opener for both (initimage.open_init_image): EXIF orientation applied, a palette picture made RGB, the
    PNG texts kept; pixels that do not read are a 422 naming the picture."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn a quarter clockwise
    buffer = io.BytesIO()
    Image.new("P", (40, 24)).save(buffer, format="PNG", pnginfo=png_info(INFOTEXT), exif=exif)
    response = client.post("/sdapi/v1/extra-single-image",
                           json={"image": base64.b64encode(buffer.getvalue()).decode(), "upscaler_1": "Nearest"})
    assert response.status_code == 200, response.text
    image = decoded(response.json()["image"])
    assert image.size == (48, 80) and image.mode == "RGB"  # upright 24×40, upscaled 2× (A1111's default)
    assert image.info["parameters"].startswith(INFOTEXT + ", Postprocess upscale by: 2")
    cut = base64.b64encode(base64.b64decode(b64_png(40, 24, None))[:300]).decode()
    truncated = client.post("/sdapi/v1/extra-single-image", json={"image": cut})
    assert truncated.status_code == 422, truncated.text
    [error] = truncated.json()["detail"]
    assert error["loc"] == ["body", "image"] and "not a readable image" in error["msg"], error


@pytest.mark.parametrize(("payload", "location", "message"), [
    ({"upscaler_1": "4x-UltraSharp"}, ["body", "upscaler_1"], "no such upscaler"),
    ({"upscaler_1": "Lanczos", "upscaler_2": "nope"}, ["body", "upscaler_2"], "no such upscaler"),
    ({"upscaler_1": "readme"}, ["body", "upscaler_1"], "upscaler_dir/ESRGAN/readme.pth: not a model file"),
    ({"upscaler_1": "Latent"}, ["body", "upscaler_1"], "a latent mode works on latents"),
    ({"upscaler_1": "Lanczos", "upscaling_resize": 500}, ["body", "upscaling_resize"], "each side must be 1 to 8192"),
    ({"upscaler_1": "Lanczos", "resize_mode": 2}, ["body", "resize_mode"], "Input should be 0 or 1"),
    ({"upscaler_1": "Lanczos", "upscaling_resize": 0}, ["body", "upscaling_resize"], "greater than 0"),
    ({"upscaler_1": "Lanczos", "codeformer_visibility": 1}, ["body", "codeformer_visibility"], "no face restoration"),
    ({"image": "bm90IGFuIGltYWdl"}, ["body", "image"], "not a readable image"),
])
def test_bad_fields_get_422_naming_the_field(client, payload, location, message):
    response = client.post("/sdapi/v1/extra-single-image", json={"image": b64_png(40, 24), **payload})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == location and message in error["msg"], error
    assert "/tmp" not in error["msg"]  # no server path shown


def test_a_bad_picture_in_a_batch_is_named_by_its_place(client):
    response = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": b64_png(20, 20), "name": "ok"}, {"data": "%%%", "name": "bad"}], "upscaler_1": "Nearest"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "imageList", "1", "data"]


def test_the_webuiapi_client_upscales_through_sdart(client):
    """webuiapi builds A1111's payloads and reads A1111's answers; here it talks to sdart."""
    import webuiapi

    class Session:  # webuiapi's requests session, sent to the in-process app instead of a socket
        def post(self, url, json):
            return client.post(url.removeprefix("http://testserver"), json=json)

        def get(self, url, **_):
            return client.get(url.removeprefix("http://testserver"))

    api = webuiapi.WebUIApi(baseurl="http://testserver/sdapi/v1", username="u", password="p")
    api.session = Session()
    picture = decoded(b64_png(40, 24))
    single = api.extra_single_image(picture, upscaler_1="4x-tiny", upscaling_resize=2)
    assert single.image.size == (80, 48) and "Postprocess upscaler: 4x-tiny" in single.info
    batch = api.extra_batch_images([picture, picture], upscaler_1="Nearest", upscaling_resize=1.5)
    assert [image.size for image in batch.images] == [(60, 36), (60, 36)]
