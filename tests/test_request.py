import math

import pytest

from sdart.request import GenerationRequest, RequestError
from sdart.sampling.samplers import SAMPLERS, find_sampler


def test_defaults_are_what_users_expect():
    r = GenerationRequest(prompt="a fox")
    assert (r.steps, r.cfg_scale, r.seed, r.sampler_name, r.batch_size, r.n_iter) == (25, 7.0, -1, "DPM++ 2M", 1, 1)
    assert r.scheduler == "Automatic"  # for DPM++ 2M: Karras, as in A1111 1.10
    assert r.width is None and r.height is None  # the model's native size


def test_a1111_aliases_and_sampler_spellings_are_accepted():
    r = GenerationRequest.parse({"prompt": "x", "sampler": "k_euler_a", "batch_count": 3, "guidance_scale": 5})
    assert (r.sampler_name, r.n_iter, r.cfg_scale) == ("Euler a", 3, 5.0)
    combined = GenerationRequest.parse(sampler_name="dpm++ 2m karras")  # A1111 < 1.9 spelling
    assert (combined.sampler_name, combined.scheduler) == ("DPM++ 2M", "Karras")


def test_every_sampler_name_round_trips():
    for sampler in SAMPLERS:
        assert GenerationRequest.parse(sampler_name=sampler.name).sampler_name == sampler.name
        for alias in sampler.aliases:
            assert find_sampler(alias) is sampler


BAD_INPUTS = [
    ({"width": 100}, "width", "multiple of 8"),
    ({"height": 0}, "height", "greater than or equal to 8"),
    ({"width": 8192}, "width", "less than or equal to 4096"),
    ({"steps": 0}, "steps", "greater than or equal to 1"),
    ({"steps": -3}, "steps", "greater than or equal to 1"),
    ({"steps": 10**6}, "steps", "less than or equal to 500"),
    ({"steps": "many"}, "steps", "valid integer"),
    ({"cfg_scale": math.nan}, "cfg_scale", "finite"),
    ({"cfg_scale": -1}, "cfg_scale", "greater than or equal to 0"),
    ({"sampler_name": "Euler b"}, "sampler_name", "valid names: DPM++ 2M, DPM++ SDE"),
    ({"scheduler": "Quadratic"}, "scheduler", "valid types: Automatic, Uniform, Karras"),
    ({"sampler_name": "PLMS", "scheduler": "Karras"}, "scheduler", "fixed timestep grid"),
    ({"sampler_name": "DPM++ 2M Karras", "scheduler": "Exponential"}, "scheduler", "give the schedule type once"),
    ({"seed": -2}, "seed", "greater than or equal to -1"),
    ({"seed": 2**63}, "seed", "less than or equal to 9223372036854775807"),
    ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
    ({"n_iter": 0}, "n_iter", "greater than or equal to 1"),
    ({"clip_skip": 0}, "clip_skip", "greater than or equal to 1"),
    ({"prompt": "a\x00b"}, "prompt", "NUL"),
    ({"prompt": 42}, "prompt", "valid string"),
    ({"stepz": 20}, "stepz", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize("fields, field, phrase", BAD_INPUTS, ids=[str(b[0]) for b in BAD_INPUTS])
def test_bad_input_names_the_field_and_value(fields, field, phrase):
    with pytest.raises(RequestError) as caught:
        GenerationRequest.parse({"prompt": "x", **fields})
    (name, value, message), *_ = caught.value.errors
    assert name == field
    assert phrase in message
    line = str(caught.value)
    assert line.startswith(f"{field} = ")
    if field != "request":
        assert repr(value)[:20] in line


def test_request_is_frozen_and_replace_revalidates():
    r = GenerationRequest(prompt="x")
    with pytest.raises(Exception):
        r.steps = 3  # type: ignore[misc]
    assert r.replace(steps=3).steps == 3
    with pytest.raises(RequestError, match="steps = 0"):
        r.replace(steps=0)
