"""Every sampler runs on the tiny SD 1.x model, on its Automatic schedule and on other schedule types, at the few
steps A1111 users ask for, calling the UNet as often as A1111's sampler would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdart.images.infotext import parse_infotext
from sdart.request import GenerationRequest
from sdart.sampling.build import make_scheduler
from sdart.sampling.samplers import SAMPLERS, effective_schedule, find_sampler
from sdart.sampling.schedules import SCHEDULE_TYPES

# k-diffusion's two-evaluation samplers take an Euler step to sigma 0 at the end: 2n − 1 UNet calls for n steps.
SECOND_ORDER = {"Heun", "DPM2", "DPM2 a", "DPM++ SDE", "DPM++ 2S a", "Restart"}
OTHER_SCHEDULES = [label for label in SCHEDULE_TYPES if label not in ("Automatic", "KL Optimal")]


def expected_unet_calls(sampler_name: str, steps: int) -> int:
    if sampler_name in SECOND_ORDER:
        return 2 * steps - 1
    if sampler_name == "PLMS":  # CompVis PLMS: a second evaluation on its first step (from 2 steps on)
        return steps + 1 if steps > 1 else 1
    return steps


@pytest.fixture(scope="module")
def tiny():
    from sdart.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd15")
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    embeds = pipe.encode_prompt("a red fox", "cpu", 1, True, "")

    model_config = dict(pipe.scheduler.config)  # the model's own (PNDM) config, as the run builds from it

    def run(sampler, schedule: str, steps: int) -> tuple[torch.Tensor, int]:
        pipe.scheduler = make_scheduler(sampler, model_config, schedule)
        calls.clear()
        latents = pipe(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], num_inference_steps=steps,
                       generator=[torch.Generator().manual_seed(3)], output_type="latent").images
        return latents, len(calls)

    return run


# Pairs that are one formula on a plain model: Normal's timesteps are Uniform's; Polyexponential's default rho 1
# makes it Exponential.
SAME_SIGMAS = {"Uniform": "Normal", "Normal": "Uniform", "Exponential": "Polyexponential",
               "Polyexponential": "Exponential"}


def other_schedule(index: int, sampler) -> str:
    """A schedule type for the i-th sampler that differs from its Automatic, so that every type runs somewhere."""
    for label in OTHER_SCHEDULES[index % len(OTHER_SCHEDULES):] + OTHER_SCHEDULES:
        if label != sampler.automatic and SAME_SIGMAS.get(label) != sampler.automatic:
            return label
    raise AssertionError("unreachable")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 3-step run of the tiny UNet is a few milliseconds of work: more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("index, sampler", list(enumerate(SAMPLERS)), ids=[s.name for s in SAMPLERS])
def test_every_sampler_runs_on_automatic_and_on_another_schedule(tiny, index, sampler):
    automatic, calls = tiny(sampler, "Automatic", 3)
    assert torch.isfinite(automatic).all() and calls == expected_unet_calls(sampler.name, 3)
    if not sampler.takes_schedules:
        return
    schedule = other_schedule(index, sampler)
    latents, calls = tiny(sampler, schedule, 3)
    assert torch.isfinite(latents).all() and calls == expected_unet_calls(sampler.name, 3)
    assert not torch.allclose(latents, automatic), f"{schedule} changed nothing"


@pytest.mark.parametrize("name", ["PLMS", "UniPC", "LMS", "DPM++ 3M SDE", "DPM++ 2M", "DEIS", "LCM", "DPM2"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_multistep_samplers_run_at_one_to_three_steps(tiny, name, steps):
    latents, calls = tiny(find_sampler(name), "Automatic", steps)
    assert torch.isfinite(latents).all() and calls == expected_unet_calls(name, steps)


def test_the_engine_runs_a_pair_a1111_runs_and_writes_it_down(tiny_engine):
    """Euler a on Karras sigmas (A1111 1.10 runs every k-diffusion sampler on every schedule type); a combined name
    is the same request."""
    fields = {"prompt": "a red fox", "steps": 3, "seed": 11}
    karras = tiny_engine.generate(GenerationRequest.parse(fields, sampler_name="Euler a", scheduler="Karras"),
                                  progress=False)
    combined = tiny_engine.generate(GenerationRequest.parse(fields, sampler_name="Euler a Karras"), progress=False)
    plain = tiny_engine.generate(GenerationRequest.parse(fields, sampler_name="Euler a"), progress=False)
    params = parse_infotext(karras.infotexts[0]).params
    assert (params["Sampler"], params["Schedule type"]) == ("Euler a", "Karras")
    assert np.array_equal(np.asarray(karras.images[0]), np.asarray(combined.images[0]))
    assert not np.array_equal(np.asarray(karras.images[0]), np.asarray(plain.images[0]))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_plms_runs_at_one_to_three_steps_through_the_engine(tiny_engine, steps):
    seen = []
    result = tiny_engine.generate(prompt="a red fox", steps=steps, seed=1, sampler_name="PNDM",
                                  on_step=lambda progress: seen.append(progress.total))
    assert len(result.images) == 1 and seen and seen[-1] == expected_unet_calls("PLMS", steps)
    assert parse_infotext(result.infotexts[0]).params["Sampler"] == "PLMS"


def test_the_engine_builds_the_schedule_for_the_models_family(tiny_engine):
    tiny_engine.generate(prompt="x", steps=2, seed=1, sampler_name="DPM++ SDE", scheduler="Align Your Steps",
                         progress=False)
    schedule = tiny_engine.model.pipeline.scheduler.sigma_schedule
    assert (schedule.label, schedule.family) == ("Align Your Steps", tiny_engine.model.family)
    again = [tiny_engine.generate(prompt="x", steps=2, seed=4, sampler_name="DPM++ SDE", progress=False)
             for _ in range(2)]  # its Brownian tree is seeded from the image's seed
    assert np.array_equal(np.asarray(again[0].images[0]), np.asarray(again[1].images[0]))
    assert effective_schedule(find_sampler("DPM++ SDE"), None) == "Karras"
