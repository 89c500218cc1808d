"""The SDXL refiner pass on a tiny SDXL base and a tiny refiner (only the second text encoder, aesthetic-score time
ids): where it takes over, how many UNet calls each model makes, its infotext, and the errors that name it."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from sdart.cli.app import app
from sdart.images.infotext import parse_infotext, read_infotext
from sdart.loading import takes_aesthetic_score
from sdart.request import GenerationRequest, RequestError

BASE = dict(prompt="a red fox", seed=3, steps=4, sampler_name="Euler")


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory):
    from sdart.testing import REFINER, save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-refiner", kind=REFINER, seed=1)


@pytest.fixture(scope="module")
def sdxl_engine(tiny_sdxl_dir):
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(tiny_sdxl_dir), settings=Settings(device="cpu", dtype="float32"))


def counted_run(engine, request, on_step=None):
    """(UNet calls of the base and of the refiner, result) of one run."""
    engine._ensure_refiner(request)  # loaded first, so that its UNet can be counted
    calls = {"base": 0, "refiner": 0}
    counted = [("base", engine.model.pipeline.unet)]
    if engine.refiner is not None:
        counted.append(("refiner", engine.refiner.pipeline.unet))
    for name, unet in counted:
        def counting(*args, _forward=unet.forward, _name=name, **kwargs):
            calls[_name] += 1
            return _forward(*args, **kwargs)

        unet.forward = counting
    try:
        result = engine.generate(request, on_step=on_step, progress=False)
    finally:
        for _, unet in counted:
            del unet.forward
    return calls, result


def test_switch_at_1_is_the_picture_without_a_refiner(sdxl_engine, refiner_dir):
    plain = sdxl_engine.generate(**BASE, progress=False)
    late = sdxl_engine.generate(**BASE, refiner_checkpoint=str(refiner_dir), refiner_switch_at=1.0, progress=False)
    assert np.array_equal(np.asarray(plain.images[0]), np.asarray(late.images[0]))
    assert "Refiner" not in parse_infotext(late.infotexts[0]).params  # as A1111: written when it took over


def test_at_0_5_the_refiner_runs_the_second_half(sdxl_engine, refiner_dir):
    """4 Euler steps on SDXL's "leading" spacing are timesteps 751, 501, 251, 1; the refiner takes those below
    round(1000 × (1 − 0.5)) = 500 (diffusers' denoising_end; A1111 ≥ 1.7 switches where (999 − t) / 1000 ≥ 0.5)."""
    request = GenerationRequest.parse({**BASE, "refiner_checkpoint": str(refiner_dir), "refiner_switch_at": 0.5})
    seen = []
    calls, result = counted_run(sdxl_engine, request, on_step=lambda p: seen.append((p.step, p.total)))
    assert calls == {"base": 2, "refiner": 2}
    assert seen == [(step, 4) for step in range(1, 5)]
    params = parse_infotext(result.infotexts[0]).params
    assert params["Refiner"] == f"tiny-refiner [{sdxl_engine.refiner.loaded.hash}]"
    assert params["Refiner switch at"] == "0.5"
    assert result.images[0].size == (128, 128)


def test_with_hires_fix_the_refiner_finishes_the_hires_pass(sdxl_engine, refiner_dir):
    """A1111's default (hires_fix_refiner_pass "second pass"): the first pass is the base's alone. The hires pass
    of 4 steps at strength 0.7 is the last 4 of int(4 / 0.7) = 5 leading timesteps (801, 601, 401, 201, 1): at
    0.5 the base keeps 601, the refiner takes 401, 201, 1."""
    request = GenerationRequest.parse({**BASE, "enable_hr": True, "hr_scale": 1.5,
                                       "refiner_checkpoint": str(refiner_dir), "refiner_switch_at": 0.5})
    calls, result = counted_run(sdxl_engine, request)
    assert calls == {"base": 4 + 1, "refiner": 3} and result.images[0].size == (192, 192)


def test_the_refiner_twin_takes_aesthetic_scores(sdxl_engine, refiner_dir):
    sdxl_engine._ensure_refiner(GenerationRequest(refiner_checkpoint=str(refiner_dir)))
    refiner_twin = sdxl_engine.refiner.twin("img2img")
    assert takes_aesthetic_score(refiner_twin) and refiner_twin.config.requires_aesthetics_score
    assert not takes_aesthetic_score(sdxl_engine.ready.twin("img2img"))


def test_refiner_errors_name_the_field(tiny_engine, sdxl_engine, tiny_model_dir, refiner_dir):
    with pytest.raises(RequestError, match="refiner_checkpoint = .*a refiner takes over an SDXL model's last steps"):
        tiny_engine.generate(prompt="x", steps=2, refiner_checkpoint=str(refiner_dir), progress=False)
    with pytest.raises(RequestError, match="refiner_checkpoint = .*is an sd1 model"):
        sdxl_engine.generate(prompt="x", steps=2, refiner_checkpoint=str(tiny_model_dir), progress=False)
    with pytest.raises(Exception, match="refiner_checkpoint = '/no/such/refiner'"):
        sdxl_engine.generate(prompt="x", steps=2, refiner_checkpoint="/no/such/refiner", progress=False)
    assert GenerationRequest.parse(refiner_checkpoint="None").refiner_checkpoint is None  # A1111's "no refiner"
    with pytest.raises(RequestError, match="refiner_switch_at"):
        GenerationRequest.parse(refiner_switch_at=0)


def test_cli_refiner_and_its_infotext_read_back(tiny_sdxl_dir, refiner_dir, tmp_path):
    run = CliRunner().invoke(app, ["generate", "a fox", "--model", str(tiny_sdxl_dir), "--device", "cpu",
                                   "--dtype", "float32", "--steps", "4", "--seed", "2", "--refiner", str(refiner_dir),
                                   "--refiner-switch-at", "0.6", "-o", str(tmp_path)])
    assert run.exit_code == 0, run.output
    fields = parse_infotext(read_infotext(tmp_path / "00001-2.png")).request_fields()
    assert fields["refiner_checkpoint"].startswith("tiny-refiner [")  # A1111's title: name [short hash]
    request = GenerationRequest.parse(fields)
    assert (request.refiner_checkpoint, request.refiner_switch_at) == ("tiny-refiner", 0.6)  # the name finds it
