"""A1111 sampler names: the 1.10 list, combined names split as A1111 splits them, strict errors for the native
front ends and A1111's fallbacks (with a note per substitution) for /sdapi/v1."""

from __future__ import annotations

import pytest

from sdart.request import GenerationRequest, RequestError
from sdart.sampling.lenient import resolve_a1111
from sdart.sampling.samplers import (
    DEFAULT_SAMPLER,
    SAMPLERS,
    effective_schedule,
    find_sampler,
    parse_sampler_name,
    sampler_names,
)

# A1111 1.10's sampler list, in its order (sd_samplers_kdiffusion, sd_samplers_timesteps, sd_samplers_lcm).
A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
                  "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++",
                  "PLMS", "UniPC", "LCM"]


def test_the_a1111_list_in_its_order_then_sdarts_own():
    assert sampler_names() == [*A1111_SAMPLERS, "DEIS"]
    assert DEFAULT_SAMPLER == "DPM++ 2M" == sampler_names()[0]


def test_aliases_are_faithful_samplers_and_say_what_differs():
    aliases = {s.name: s.alias_of for s in SAMPLERS if s.alias_of}
    assert aliases == {"DPM fast": "DPM++ 2M", "DPM adaptive": "DPM++ 2M", "Restart": "Heun", "DDIM CFG++": "DDIM"}
    for sampler in SAMPLERS:
        assert bool(sampler.note) == bool(sampler.alias_of) and sampler.algorithm, sampler.name
        if sampler.alias_of:
            assert find_sampler(sampler.alias_of).alias_of is None
            assert sampler.scheduler_class == find_sampler(sampler.alias_of).scheduler_class


def test_automatic_is_a1111s_per_sampler_schedule():
    """A1111 1.10's `scheduler` option per sampler: DPM++ 2M, 2S a, SDE, DPM2 (a), Restart on Karras; the 2M SDE and
    3M SDE ones on Exponential; Euler (a), LMS, Heun on the model's uniform sigmas; timestep samplers on their grid."""
    automatic = {s.name: effective_schedule(s, "Automatic") for s in SAMPLERS}
    assert automatic == {
        "DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential", "DPM++ 2M SDE Heun": "Exponential",
        "DPM++ 2S a": "Karras", "DPM++ 3M SDE": "Exponential", "Euler a": "Uniform", "Euler": "Uniform",
        "LMS": "Uniform", "Heun": "Uniform", "DPM2": "Karras", "DPM2 a": "Karras", "DPM fast": "Exponential",
        "DPM adaptive": "Exponential", "Restart": "Karras", "DDIM": "Automatic", "DDIM CFG++": "Automatic",
        "PLMS": "Automatic", "UniPC": "Automatic", "LCM": "Automatic", "DEIS": "Automatic"}
    assert [s.name for s in SAMPLERS if s.discard_penultimate_sigma] == ["DPM++ 3M SDE", "DPM2", "DPM2 a"]


def test_api_options_in_a1111s_shape():
    assert find_sampler("DPM++ 3M SDE").api_options() == {"scheduler": "exponential",
                                                          "discard_next_to_last_sigma": "True",
                                                          "brownian_noise": "True"}
    assert find_sampler("Euler").api_options() == {}
    restart = find_sampler("Restart").api_options()
    assert restart["scheduler"] == "karras" and restart["sdart_alias_of"] == "Heun"
    assert "without the restarts" in restart["sdart_note"]


@pytest.mark.parametrize("name, sampler, schedule", [
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
    ("DPM++ SDE Karras", "DPM++ SDE", "Karras"),
    ("Euler a Karras", "Euler a", "Karras"),
    ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
    ("DPM++ 3M SDE Karras", "DPM++ 3M SDE", "Karras"),
    ("Euler SGM Uniform", "Euler", "SGM Uniform"),  # the longer schedule name wins over "Uniform"
    ("euler sgm_uniform", "Euler", "SGM Uniform"),
    ("Euler a Align Your Steps", "Euler a", "Align Your Steps"),
    ("UniPC DDIM", "UniPC", "DDIM"),
    ("DPM2 a Automatic", "DPM2 a", "Automatic"),
    ("k_dpmpp_2m_ka", "DPM++ 2M", "Karras"),  # A1111 < 1.9 aliases of the Karras variants
    ("k_dpm_2_a_ka", "DPM2 a", "Karras"),
    ("DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun", None),  # a whole name is not split ("Heun" is no schedule)
    ("DDIM", "DDIM", None),  # nor is a sampler that shares a schedule type's name
    ("DDIM CFG++", "DDIM CFG++", None),
    ("PNDM", "PLMS", None),
])
def test_combined_names_split_as_a1111_splits_them(name, sampler, schedule):
    found, implied = parse_sampler_name(name)
    assert (found.name, implied) == (sampler, schedule)


def test_unknown_sampler_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown sampler 'Euler b'; valid names: DPM\\+\\+ 2M, DPM\\+\\+ SDE"):
        parse_sampler_name("Euler b")
    with pytest.raises(ValueError, match="unknown sampler 'Euler b Karras'"):
        parse_sampler_name("Euler b Karras")


def test_the_request_splits_a_combined_name_and_keeps_it_consistent():
    request = GenerationRequest.parse(prompt="x", sampler_name="Euler a Karras")
    assert (request.sampler_name, request.scheduler) == ("Euler a", "Karras")
    aliased = GenerationRequest.parse({"sampler": "DPM++ 2M SDE Karras", "schedule_type": "karras"})
    assert (aliased.sampler_name, aliased.scheduler) == ("DPM++ 2M SDE", "Karras")
    with pytest.raises(RequestError, match="names schedule type 'Karras', but scheduler is 'Beta'"):
        GenerationRequest.parse(sampler_name="DPM++ 2M Karras", scheduler="Beta")
    # a pair A1111 runs, sdart runs; only a fixed grid refuses, naming the field
    assert GenerationRequest.parse(sampler_name="Euler a", scheduler="Karras").scheduler == "Karras"
    with pytest.raises(RequestError) as refused:
        GenerationRequest.parse(sampler_name="PLMS", scheduler="KL Optimal")
    assert str(refused.value).startswith("scheduler = 'KL Optimal': ") and "sampler 'PLMS'" in str(refused.value)


def test_resolve_a1111_passes_good_names_without_notes():
    sampler, schedule, notes = resolve_a1111("Euler a", "Karras")
    assert (sampler.name, schedule, notes) == ("Euler a", "Karras", [])
    sampler, schedule, notes = resolve_a1111("DPM++ 2M Karras", "Automatic")
    assert (sampler.name, schedule, notes) == ("DPM++ 2M", "Karras", [])
    sampler, schedule, notes = resolve_a1111(None, None)
    assert (sampler.name, schedule, notes) == ("DPM++ 2M", "Automatic", [])


def test_resolve_a1111_falls_back_and_says_so():
    sampler, schedule, notes = resolve_a1111("Euler Turbo", "Karras")
    assert (sampler.name, schedule) == ("DPM++ 2M", "Karras")
    assert notes == ["sampler_name: unknown sampler 'Euler Turbo', used DPM++ 2M (A1111's default)"]
    sampler, schedule, notes = resolve_a1111("Foo Exponential", None)  # the suffix still names the schedule
    assert (sampler.name, schedule) == ("DPM++ 2M", "Exponential") and "unknown sampler 'Foo'" in notes[0]
    sampler, schedule, notes = resolve_a1111("Euler", "Quadratic")
    assert (sampler.name, schedule) == ("Euler", "Automatic")
    assert notes == ["scheduler: unknown schedule type 'Quadratic', used Automatic (as A1111 does)"]
    sampler, schedule, notes = resolve_a1111("DPM++ 2M Karras", "Exponential")
    assert (sampler.name, schedule) == ("DPM++ 2M", "Karras") and "Exponential replaced by Karras" in notes[0]
    sampler, schedule, notes = resolve_a1111("PLMS", "Karras")
    assert (sampler.name, schedule) == ("PLMS", "Automatic") and "schedule type Karras not applied" in notes[0]
    sampler, schedule, notes = resolve_a1111("Restart", None)
    assert (sampler.name, schedule) == ("Restart", "Automatic") and notes[0].startswith("sampler_name: Restart ran as Heun")
