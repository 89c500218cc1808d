"""The engine on a tiny random model: sizes, seeds, determinism, samplers, progress and cancellation."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sdart.images.infotext import parse_infotext
from sdart.request import GenerationRequest
from sdart.sampling.samplers import SAMPLERS

STEPS = 3


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def run(engine, **fields):
    return engine.generate(GenerationRequest.parse({"prompt": "a red fox", "steps": STEPS, "seed": 7, **fields}),
                           progress=False)


def test_native_size_seeds_and_metadata(tiny_engine):
    size = tiny_engine.model.native_size
    result = run(tiny_engine, batch_size=2, n_iter=2)
    assert [im.size for im in result.images] == [(size, size)] * 4
    assert result.seeds == [7, 8, 9, 10]
    assert not result.cancelled
    parsed = [parse_infotext(text) for text in result.infotexts]
    assert [int(p.params["Seed"]) for p in parsed] == result.seeds
    assert parsed[0].params["Size"] == f"{size}x{size}" and parsed[0].params["Steps"] == str(STEPS)
    assert parsed[0].params["Model hash"] == tiny_engine.model.hash and len(tiny_engine.model.hash) == 10
    assert result.timings["total_s"] > 0 and result.timings["step_s"] > 0


def test_same_request_gives_identical_pixels_and_other_seeds_differ(tiny_engine):
    a, b, c = run(tiny_engine), run(tiny_engine), run(tiny_engine, seed=8)
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))


def test_image_i_of_a_run_is_reproduced_from_its_own_seed(tiny_engine):
    """Noise comes from one generator per image, so image i of a batch = a single run at seed + i (up to
    the float rounding that a different batch shape may bring)."""
    batch = run(tiny_engine, batch_size=3)
    single = run(tiny_engine, seed=9)
    assert np.abs(pixels(batch.images[2]) - pixels(single.images[0])).max() <= 2


def test_random_seed_is_reported(tiny_engine):
    result = run(tiny_engine, seed=-1)
    assert result.request.seed >= 0 and result.seeds == [result.request.seed]
    again = run(tiny_engine, seed=result.request.seed)
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))


def test_explicit_size(tiny_engine):
    result = run(tiny_engine, width=48, height=32)
    assert result.images[0].size == (48, 32)


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_every_sampler_runs(tiny_engine, sampler):
    result = run(tiny_engine, sampler_name=sampler)
    image = pixels(result.images[0])
    assert image.shape[2] == 3 and image.std() > 0  # a real picture, not a constant
    assert parse_infotext(result.infotexts[0]).params["Sampler"] == sampler


def test_samplers_differ(tiny_engine):
    euler = pixels(run(tiny_engine, sampler_name="Euler").images[0])
    ddim = pixels(run(tiny_engine, sampler_name="DDIM").images[0])
    assert not np.array_equal(euler, ddim)


@pytest.mark.parametrize("change", [{"negative_prompt": "blurry"}, {"clip_skip": 2}, {"cfg_scale": 1.0},
                                    {"prompt": "a blue square"}])
def test_conditioning_inputs_change_the_image(tiny_engine, change):
    assert not np.array_equal(pixels(run(tiny_engine).images[0]), pixels(run(tiny_engine, **change).images[0]))


def test_progress_reports_every_step(tiny_engine):
    seen = []
    tiny_engine.generate(GenerationRequest.parse(prompt="x", steps=4, n_iter=2, seed=1), on_step=seen.append)
    assert [(p.iteration, p.step) for p in seen] == [(i, s) for i in range(2) for s in range(1, 5)]
    assert all(p.total == 4 and p.iterations == 2 for p in seen)
    assert seen[-1].fraction == 1.0 and seen[-1].it_per_s > 0


def test_cancel_stops_between_steps_and_keeps_finished_batches(tiny_engine):
    cancel = threading.Event()
    seen = []

    def on_step(p):
        seen.append(p)
        if p.iteration == 1 and p.step == 2:
            cancel.set()

    result = tiny_engine.generate(GenerationRequest.parse(prompt="x", steps=4, n_iter=3, seed=1),
                                  on_step=on_step, cancel=cancel)
    assert result.cancelled
    assert result.seeds == [1] and len(result.images) == 1  # batch 0 finished, batch 1 stopped at step 2
    assert (seen[-1].iteration, seen[-1].step) == (1, 2)


def test_result_saves_numbered_pngs_and_never_overwrites(tiny_engine, tmp_path):
    result = run(tiny_engine, batch_size=2)
    first = result.save(tmp_path)
    second = result.save(tmp_path)
    assert [p.name for p in first + second] == ["00001-7.png", "00002-8.png", "00003-7.png", "00004-8.png"]
    assert result._repr_png_().startswith(b"\x89PNG")


def test_request_model_switches_the_loaded_model(tiny_model_dir, tiny_sdxl_dir):
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32"))
    result = engine.generate(prompt="x", steps=2, seed=1, model=str(tiny_sdxl_dir), progress=False)
    assert engine.model.family == "sdxl" and engine.reference == str(tiny_sdxl_dir)
    assert result.images[0].size == (engine.model.native_size,) * 2


def test_python_api_accepts_keywords():
    import sdart

    assert sdart.Engine.__name__ == "Engine"
    assert sdart.GenerationRequest.parse(prompt="x").prompt == "x"


def test_sd2_v_prediction_model_uses_its_own_size_and_schedule(tmp_path):
    from sdart.engine import Engine
    from sdart.settings import Settings
    from sdart.testing import save_tiny_model

    engine = Engine(str(save_tiny_model(tmp_path / "sd2v", kind="sd2v")), settings=Settings(device="cpu", dtype="float32"))
    assert engine.model.family == "sd2" and engine.model.native_size == 96
    result = engine.generate(prompt="x", steps=2, seed=1, sampler_name="DPM++ 2M", progress=False)
    assert result.images[0].size == (96, 96)
    assert engine.model.pipeline.scheduler.config.prediction_type == "v_prediction"  # kept across sampler swaps


@pytest.mark.parametrize("memory", ["low", "minimal"])
def test_memory_modes_on_cpu_give_the_same_picture(tiny_model_dir, tiny_engine, memory):
    from sdart.engine import Engine
    from sdart.settings import Settings

    lean = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", memory=memory))
    assert lean.model.pipeline.vae.use_tiling and lean.model.pipeline.vae.use_slicing
    a = pixels(run(tiny_engine).images[0])
    b = pixels(run(lean).images[0])
    assert np.abs(a - b).max() <= 3  # the tiny model's pictures fit one tile: only float sums are reordered


def test_low_memory_decodes_a_512_picture_in_smaller_tiles():
    from diffusers import AutoencoderKL

    from sdart.speed.memory import apply_memory_mode

    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    assert vae.tile_sample_min_size == 512  # diffusers' default: a 512² picture would be decoded in one piece
    pipe = SimpleNamespace(vae=vae, to=lambda device: None)
    apply_memory_mode(pipe, "low", torch.device("cpu"))
    assert vae.use_tiling and (vae.tile_sample_min_size, vae.tile_latent_min_size) == (256, 32)
    tiles = []
    real_decode = vae.decoder.forward
    vae.decoder.forward = lambda z, *args, **kw: tiles.append(tuple(z.shape[-2:])) or real_decode(z, *args, **kw)
    with torch.no_grad():
        image = vae.decode(torch.randn(1, 4, 64, 64)).sample
    assert image.shape == (1, 3, 512, 512)
    assert len(tiles) > 1 and max(tiles) == (32, 32)  # never the whole 64×64 latent at once
