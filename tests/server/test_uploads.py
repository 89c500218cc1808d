"""Uploaded img2img pictures and inpainting masks on both APIs, in-process: what a picture that does not read is
answered with, and what is stored."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

FIELDS = {"prompt": "x", "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tiny_engine, tmp_path_factory):
    from sdart.server.app import create_app
    from sdart.settings import Settings

    data_dir = tmp_path_factory.mktemp("data")
    with TestClient(create_app(Settings(data_dir=data_dir, device="cpu", dtype="float32"), tiny_engine)) as client:
        yield client, data_dir / "inputs"


def png_b64(seed: int, keep: int | None = None) -> str:
    """A 64×64 noise PNG as bare base64, its bytes cut to `keep` (the header still reads, the pixels don't)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()[:keep]).decode("ascii")


def test_a_truncated_picture_is_refused_naming_its_field_and_nothing_is_stored(server):
    client, inputs = server
    before = set(inputs.glob("*"))
    good, cut = png_b64(1), png_b64(2, keep=2000)
    native = client.post("/api/v1/jobs", json={**FIELDS, "init_image": f"data:image/png;base64,{good}",
                                               "mask": f"data:image/png;base64,{cut}"})
    assert native.status_code == 422, native.text
    detail = native.json()["detail"]
    assert detail[0]["loc"] == ["body", "mask"] and "not a readable image" in detail[0]["msg"]
    a1111 = client.post("/sdapi/v1/img2img", json={**FIELDS, "init_images": [cut]})
    assert a1111.status_code == 422, a1111.text
    assert "not a readable image" in a1111.json()["detail"][0]["msg"]
    assert set(inputs.glob("*")) == before  # the good picture stored first is removed with the refusal


def test_each_picture_is_decoded_once_per_request(server, monkeypatch):
    """The base64 text of a picture and of a mask is decoded once, however often the request is checked on its way
    to the queue (model, refiner and LoRA references, the stored file's path): what is decoded is passed on."""
    client, _ = server
    picture, mask = png_b64(3), png_b64(4)
    decoded: list[str] = []
    b64decode = base64.b64decode

    def counting(text, *args, **kwargs):
        decoded.append({picture: "picture", mask: "mask"}.get(text, "other"))
        return b64decode(text, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", counting)
    a1111 = client.post("/sdapi/v1/img2img", json={**FIELDS, "init_images": [picture], "mask": mask})
    assert a1111.status_code == 200, a1111.text
    assert sorted(name for name in decoded if name != "other") == ["mask", "picture"]
    decoded.clear()
    native = client.post("/api/v1/jobs", json={**FIELDS, "init_image": f"data:image/png;base64,{picture}",
                                               "mask": f"data:image/png;base64,{mask}"})
    assert native.status_code == 202, native.text
    assert sorted(name for name in decoded if name != "other") == ["mask", "picture"]
