"""Variation seeds (A1111's subseed, subseed_strength, seed_resize_from) and seeds up to 2**63 − 1: the noise, the
pictures it gives, the seeds of each image of a run, and the infotext both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from sdart.batch.plan import expand_line
from sdart.images.infotext import parse_infotext
from sdart.request import MAX_RANDOM_SEED, MAX_SEED, GenerationRequest, RequestError
from sdart.run.noise import Variation, image_noise, slerp

BIG_SEED = 1087151610341875  # written by Civitai/A1111, past 2**32
BASE = dict(prompt="a red fox", steps=3, seed=7)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def picture(engine, **fields) -> np.ndarray:
    return pixels(engine.generate(GenerationRequest.parse({**BASE, **fields}), progress=False).images[0])


# --- the noise ---------------------------------------------------------------------------------------------

def test_plain_noise_is_diffusers_own_draw_and_leaves_the_generator_where_diffusers_does():
    shape = (4, 8, 8)
    ours, theirs = torch.Generator().manual_seed(BIG_SEED), torch.Generator().manual_seed(BIG_SEED)
    noise = image_noise(shape, BIG_SEED, -1, Variation(), ours, torch.float32)
    assert torch.equal(noise, randn_tensor((1, *shape), generator=[theirs], dtype=torch.float32))
    assert torch.equal(torch.randn(3, generator=ours), torch.randn(3, generator=theirs))  # the sampler's next draw


def test_engine_pictures_of_plain_seeds_are_what_diffusers_alone_makes(tiny_engine):
    """Same seed → same picture as before noise was drawn by sdart: the pipeline called directly with the
    seed's generator (Euler a, so the ancestral noise drawn after the start noise counts too)."""
    from sdart.sampling.build import make_scheduler
    from sdart.sampling.samplers import find_sampler

    ours = picture(tiny_engine, sampler_name="Euler a", seed=12345)
    pipe = tiny_engine.model.pipeline
    pipe.scheduler = make_scheduler(find_sampler("Euler a"), tiny_engine.ready.base_scheduler_config,
                                    family=tiny_engine.model.family)
    theirs = pipe(prompt=["a red fox"], num_inference_steps=3, guidance_scale=7.0, width=64, height=64,
                  generator=[torch.Generator().manual_seed(12345)]).images[0]
    assert np.array_equal(ours, pixels(theirs))


def test_slerp_goes_from_one_noise_to_the_other_along_each_column():
    low, high = torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(1)), \
        torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(slerp(0.0, low, high), low) and torch.allclose(slerp(1.0, low, high), high, atol=1e-6)
    mid = slerp(0.5, low, high)
    # A1111 takes the angle ω per channel and column, over the height axis: each (c, :, w) column of the
    # midpoint is (a + b) · sin(ω/2) / sin(ω), the point halfway along the arc (Shoemake's slerp).
    for c, w in ((0, 0), (3, 5)):
        a, b = low[c, :, w], high[c, :, w]
        omega = torch.acos(torch.nn.functional.cosine_similarity(a, b, dim=0))
        assert torch.allclose(mid[c, :, w], (a + b) * torch.sin(omega / 2) / torch.sin(omega), atol=1e-5)
    assert torch.equal(slerp(0.3, low, low), low)  # parallel noises: linear, no 0/0


def test_seed_resize_from_pastes_the_centre_of_the_noise_drawn_at_that_size():
    shape = (4, 12, 12)
    noise = image_noise(shape, 5, -1, Variation(resize_from=(64, 32)), torch.Generator().manual_seed(5),
                        torch.float32)[0]
    drawn = torch.randn((1, 4, 4, 8), generator=torch.Generator().manual_seed(5))[0]  # 32 × 64 px at the seed
    full = torch.randn((1, *shape), generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(noise[:, 4:8, 2:10], drawn)  # centred: (12 − 4) // 2 rows, (12 − 8) // 2 columns in
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[4:8, 2:10] = False
    assert torch.equal(noise[:, outside], full[:, outside])
    # Drawn larger than the picture: its centre is cropped.
    big = image_noise((4, 4, 4), 5, -1, Variation(resize_from=(64, 64)), torch.Generator().manual_seed(5),
                      torch.float32)[0]
    assert torch.equal(big, torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5))[0, :, 2:6, 2:6])


# --- the pictures ------------------------------------------------------------------------------------------

def test_variation_strength_moves_from_the_seed_s_picture_to_the_subseed_s(tiny_engine):
    seed_picture, subseed_picture = picture(tiny_engine), picture(tiny_engine, seed=99)
    assert np.array_equal(picture(tiny_engine, subseed=99, subseed_strength=0.0), seed_picture)
    assert np.array_equal(picture(tiny_engine, subseed=99, subseed_strength=1.0), subseed_picture)
    between = picture(tiny_engine, subseed=99, subseed_strength=0.5)
    apart = np.abs(seed_picture - subseed_picture).mean()
    assert 0 < np.abs(between - seed_picture).mean() < apart and 0 < np.abs(between - subseed_picture).mean() < apart


def test_a_run_with_variation_seeds_keeps_the_seed_and_counts_the_subseed_up(tiny_engine):
    """As A1111 (processing.py: all_seeds = seed + (i if subseed_strength == 0 else 0), all_subseeds = subseed + i)."""
    run = tiny_engine.generate(GenerationRequest.parse({**BASE, "subseed": 40, "subseed_strength": 0.3,
                                                        "batch_size": 2, "n_iter": 2}), progress=False)
    assert run.seeds == [7] * 4
    params = [parse_infotext(text).params for text in run.infotexts]
    assert [p["Variation seed"] for p in params] == ["40", "41", "42", "43"]
    assert {p["Variation seed strength"] for p in params} == {"0.3"} and {p["Seed"] for p in params} == {"7"}
    third = picture(tiny_engine, subseed=42, subseed_strength=0.3)
    assert np.abs(pixels(run.images[2]) - third).max() <= 2  # batch-shape rounding only


def test_variation_seeds_apply_to_img2img_and_the_hires_pass(tiny_engine, tmp_path):
    from PIL import Image

    start = tmp_path / "start.png"
    Image.fromarray(picture(tiny_engine).astype(np.uint8)).save(start)
    for fields in ({"init_image": str(start), "denoising_strength": 0.6}, {"enable_hr": True, "hr_scale": 1.5}):
        plain = picture(tiny_engine, **fields)
        assert np.array_equal(picture(tiny_engine, **fields, subseed=99, subseed_strength=0.0), plain)
        assert not np.array_equal(picture(tiny_engine, **fields, subseed=99, subseed_strength=0.5), plain), fields


def test_variation_infotext_round_trip_with_big_seeds(tiny_engine):
    result = tiny_engine.generate(GenerationRequest.parse({**BASE, "seed": BIG_SEED, "subseed": MAX_SEED,
                                                           "subseed_strength": 0.25, "seed_resize_from_w": 48,
                                                           "seed_resize_from_h": 32}), progress=False)
    params = parse_infotext(result.infotexts[0]).params
    assert (params["Seed"], params["Variation seed"]) == (str(BIG_SEED), str(MAX_SEED))
    assert (params["Variation seed strength"], params["Seed resize from"]) == ("0.25", "48x32")
    again = GenerationRequest.parse(parse_infotext(result.infotexts[0]).request_fields())
    assert (again.seed, again.subseed, again.subseed_strength) == (BIG_SEED, MAX_SEED, 0.25)
    assert (again.seed_resize_from_w, again.seed_resize_from_h) == (48, 32)
    assert np.array_equal(pixels(tiny_engine.generate(again, progress=False).images[0]), pixels(result.images[0]))


def test_seeds_up_to_2_63_are_taken_and_random_ones_stay_below_2_32(tiny_engine):
    assert GenerationRequest.parse(seed=MAX_SEED).seed == MAX_SEED
    with pytest.raises(RequestError, match="seed: the run's last image would take seed 9223372036854775808"):
        GenerationRequest.parse(seed=MAX_SEED, batch_size=2)
    with pytest.raises(RequestError, match="subseed: the run's last image"):
        GenerationRequest.parse(subseed=MAX_SEED, subseed_strength=0.5, n_iter=2)
    for _ in range(20):
        resolved = tiny_engine.resolve_request(GenerationRequest(subseed_strength=0.5))
        assert 0 <= resolved.seed < MAX_RANDOM_SEED and 0 <= resolved.subseed < MAX_RANDOM_SEED
    assert tiny_engine.resolve_request(GenerationRequest()).subseed == -1  # no variation: left alone


@pytest.mark.parametrize("fields, field, phrase", [
    ({"subseed_strength": 1.5}, "subseed_strength", "less than or equal to 1"),
    ({"subseed": -2}, "subseed", "greater than or equal to -1"),
    ({"seed_resize_from_w": 4, "seed_resize_from_h": 64}, "seed_resize_from_w", "at least 8"),
    ({"seed_resize_from_w": 64}, "seed_resize_from_w", "seed_resize_from_w: goes with seed_resize_from_h"),
])
def test_bad_variation_fields_are_named(fields, field, phrase):
    with pytest.raises(RequestError) as caught:
        GenerationRequest.parse({"prompt": "x", **fields})
    name, _, message = caught.value.errors[0]
    assert name == field and phrase in message, caught.value


def test_resuming_and_batch_lines_count_the_seeds_as_a1111():
    varied = GenerationRequest(seed=7, subseed=40, subseed_strength=0.5, batch_size=2, n_iter=3)
    assert (varied.starting_at(4).seed, varied.starting_at(4).subseed) == (7, 44)
    plain = GenerationRequest(seed=7, batch_size=2, n_iter=3)
    assert (plain.starting_at(4).seed, plain.starting_at(4).subseed) == (11, -1)
    tasks = expand_line("line 1", {"prompt": "x", "seed": 7, "subseed": 40, "subseed_strength": 0.5, "n_iter": 3},
                        {}, model="m")
    assert [(t.request.seed, t.request.subseed) for t in tasks] == [(7, 40), (7, 41), (7, 42)]
    assert len({t.key for t in tasks}) == 3
