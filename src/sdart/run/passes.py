"""The passes of one batch, each one pipeline call: the first pass (txt2img, img2img or inpainting), then the hires
pass (sdart.run.hires) and the refiner pass (sdart.run.refiner). A pass is described by a `PassCall`; `call_pipeline`
is the one place a pipeline is called."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sdart.conditioning import Conditioning
from sdart.run.conditioning import StepConditioning
from sdart.run.noise import Variation, batch_noise, use_noise
from sdart.sampling.build import make_scheduler
from sdart.sampling.samplers import effective_schedule, find_sampler
from sdart.speed.stepcache import reset_step_cache


@dataclass
class PassCall:
    """One pipeline call: the pipeline and its scheduler, the prompts (their text, and as the UNet sees them), where
    it starts (`start`: size and noise for txt2img, the picture or latents and strength for img2img) and where it
    stops (`until`: the fraction of the schedule after which the refiner takes over)."""

    name: str  # "first", "hires" or "refiner"
    pipe: Any
    scheduler: Any
    steps: int  # num_inference_steps: the length of the schedule the pass runs (part of)
    sampler_name: str
    prompt: str  # the texts, without <lora:…> tags: what the refiner encodes again with its own encoder
    negative_prompt: str
    conditioning: Conditioning
    cfg_scale: float
    generators: list[torch.Generator]
    start: dict[str, Any] = field(default_factory=dict)
    noise: torch.Tensor | None = None  # img2img: noise the picture with this instead of the pipeline's own draw
    until: float | None = None
    calls_before: int = 0  # model calls of the same schedule made by the pass this one continues (the refiner)


def call_pipeline(call: PassCall, *, on_step_end, output_type: str):
    """Run one pass; its images (PIL) or, with output_type "latent", its latents (B, C, h, w). After each model call
    `on_step_end` runs, then prompt editing switches the embeddings where the schedule says."""
    if call.noise is not None:
        use_noise(call.scheduler, call.noise)
    call.pipe.scheduler = call.scheduler
    reset_step_cache(call.pipe.unet)  # a step cache starts empty: nothing carries over from another pass
    prompts = StepConditioning(call.conditioning, call.sampler_name, len(call.generators), call.calls_before)

    def step_end(pipeline, step_index, timestep, callback_kwargs):
        callback_kwargs = on_step_end(pipeline, step_index, timestep, callback_kwargs)
        callback_kwargs.update(prompts.next_step(pipeline, step_index, callback_kwargs))
        return callback_kwargs

    ends = {"denoising_end": call.until} if call.until is not None else {}
    output = call.pipe(
        **prompts.pipeline_kwargs(call.pipe),  # prompt_embeds, negative_prompt_embeds (+ SDXL's pooled ones)
        num_inference_steps=call.steps,
        guidance_scale=call.cfg_scale,
        **call.start,
        **ends,
        generator=call.generators,
        callback_on_step_end=step_end,
        callback_on_step_end_tensor_inputs=["latents", *prompts.tensor_inputs(call.pipe)],
        output_type=output_type,
    )
    return output.images if output_type == "latent" else list(output.images)


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor) -> list:
    """A pass's latents (B, C, h, w) as pictures, as the pipeline decodes them (a batch ended early, before the
    pass that would have decoded it)."""
    vae = pipe.vae
    scaled = latents.to(vae.dtype) / vae.config.scaling_factor
    images = vae.decode(scaled, return_dict=False)[0]
    return pipe.image_processor.postprocess(images.detach(), output_type="pil")


def scheduler_for(sampler_name: str, schedule: str, ready) -> Any:
    """A fresh scheduler for one pass on `ready`'s model (a ReadyModel: its training schedule and family); fresh,
    since a pass changes its scheduler's state and may replace its noise."""
    return make_scheduler(find_sampler(sampler_name), ready.base_scheduler_config, schedule,
                          family=ready.loaded.family)


def fitting_schedule(sampler_name: str, schedule: str) -> str:
    """`schedule` if `sampler_name` takes it, else the sampler's own (a schedule inherited from another pass)."""
    try:
        effective_schedule(find_sampler(sampler_name), schedule)
        return schedule
    except ValueError:
        return "Automatic"


def latent_shape(pipe, width: int, height: int) -> tuple[int, int, int]:
    """(C, h, w) of the latents of a `width × height` picture."""
    scale = pipe.vae_scale_factor
    return (pipe.vae.config.latent_channels, height // scale, width // scale)


def noise_dtype(pipe) -> torch.dtype:
    """The dtype the pipeline's latents have (the UNet's: diffusers draws its noise in the prompt embeddings'
    dtype, which is the pipeline's)."""
    return pipe.unet.dtype


def first_pass(pipe, request, *, init, mask, seeds: list[int], subseeds: list[int],
               generators: list[torch.Generator], ready, until: float | None, prompt: str,
               conditioning: Conditioning) -> PassCall:
    """txt2img from the seeds' noise; img2img from the fitted picture, skipping the first (1 − strength) of the
    steps as A1111 does; inpainting the same, only under the mask."""
    variation = Variation.of(request)
    call = PassCall("first", pipe, scheduler_for(request.sampler_name, request.scheduler, ready), request.steps,
                    request.sampler_name, prompt, request.negative_prompt, conditioning, request.cfg_scale,
                    generators, until=until)
    shape = latent_shape(pipe, request.width, request.height)
    if init is None:
        noise = batch_noise(shape, seeds, subseeds, variation, generators, noise_dtype(pipe))
        call.start = dict(width=request.width, height=request.height, latents=noise)
        return call
    count = len(seeds)
    call.start = dict(image=[init] * count, strength=request.denoising_strength)
    if mask is not None:
        call.start.update(mask_image=[mask] * count, width=request.width, height=request.height)
    if variation.active:
        call.noise = batch_noise(shape, seeds, subseeds, variation, generators, noise_dtype(pipe))
        if mask is not None and request.denoising_strength == 1.0:
            call.start["latents"] = call.noise  # inpainting at full strength starts from the noise itself
    return call
