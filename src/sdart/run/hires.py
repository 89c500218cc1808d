"""The hires-fix pass (A1111's `sample_hr_pass`): the first pass upscaled (in latent space or in pixels,
sdart.run.upscale) and redrawn by img2img at `denoising_strength`, with its own sampler, schedule, steps, prompt
and guidance where the request gives them, from new noise of the same seeds at the larger size."""

from __future__ import annotations

import torch

from sdart.run.noise import Variation, batch_noise
from sdart.run.passes import PassCall, fitting_schedule, latent_shape, noise_dtype, scheduler_for
from sdart.run.upscale import upscale_latents, upscale_picture
from sdart.sampling.samplers import effective_schedule, find_sampler
from sdart.upscalers.extras import Runner
from sdart.upscalers.names import is_latent_mode


def hires_sampler(request) -> tuple[str, str]:
    """(sampler, schedule type) of the hires pass: the request's hr_ fields, else the first pass's; a schedule
    inherited from the first pass (its sampler's name included: "DPM++ 2M Karras") that the hires sampler can't
    take falls back to that sampler's own."""
    sampler = request.hr_sampler_name or request.sampler_name
    if request.hr_scheduler is not None:
        return sampler, request.hr_scheduler
    inherited = effective_schedule(find_sampler(request.sampler_name), request.scheduler)
    return sampler, fitting_schedule(sampler, inherited)


def hires_steps(steps: int, strength: float, train_steps: int) -> tuple[int, float]:
    """(schedule length, diffusers strength) that run exactly `steps` steps from the noise level of `strength`.

    A1111 runs a hires pass of n steps as the last n of a schedule of int(n / strength) steps
    (sd_samplers_common.setup_img2img_steps with steps given; strength capped at 0.999), not as int(n × strength)
    steps like img2img. diffusers' img2img runs int(length × strength) steps of a schedule of `length`, so the
    strength it is given is nudged to make that exactly n. The schedule can't outgrow the training timesteps.
    """
    length = min(int(steps / min(strength, 0.999)), train_steps)
    steps = min(steps, length)
    return length, (1.0 if steps == length else (steps + 0.5) / length)


def hires_prompts(request, prompt: str) -> tuple[str, str]:
    """The hires pass's (prompt, negative prompt): the hr_ ones, else the first pass's (`prompt`: the request's
    without its <lora:…> tags)."""
    from sdart.conditioning.extra_networks import extract_extra_networks

    hires_prompt = extract_extra_networks(request.hr_prompt)[0] if request.hr_prompt else prompt
    return hires_prompt, request.hr_negative_prompt or request.negative_prompt


def hires_pass(pipe, request, first_output, *, seeds: list[int], subseeds: list[int], ready, rng_device,
               upscaling: Runner, prompt: str, conditioning, until: float | None = None) -> PassCall:
    """The hires pass of one batch from the first pass's output: latents (B, C, h, w) for the latent upscalers,
    pictures otherwise. `prompt`, `conditioning`: the hires prompt (hires_prompts) and its encoding."""
    size = request.hires_size(pipe.vae_scale_factor)
    steps, strength = hires_steps(request.hr_second_pass_steps or request.steps, request.denoising_strength,
                                  ready.base_scheduler_config.get("num_train_timesteps", 1000))
    if is_latent_mode(request.hr_upscaler):
        image = upscale_latents(first_output, request.hr_upscaler, size)
    else:
        image = [upscale_picture(picture, request.hr_upscaler, size, upscaling) for picture in first_output]
    # As A1111: new noise from the same seeds (and variation seeds) at the hires size, from new generators.
    generators = [torch.Generator(rng_device).manual_seed(seed) for seed in seeds]
    noise = batch_noise(latent_shape(pipe, size.width, size.height), seeds, subseeds, Variation.of(request),
                        generators, noise_dtype(pipe))
    sampler, schedule = hires_sampler(request)
    return PassCall("hires", pipe, scheduler_for(sampler, schedule, ready), steps, sampler, prompt,
                    hires_prompts(request, prompt)[1], conditioning,
                    request.cfg_scale if request.hr_cfg is None else request.hr_cfg, generators,
                    start=dict(image=image, strength=strength), noise=noise, until=until)
