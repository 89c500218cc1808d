"""One request's batches through a ready model: each batch runs its passes (the first pass: txt2img, img2img or
inpainting; the hires pass; the refiner pass) with one generator per image, reports each step over all passes,
and is finished (compositing, safety check, infotext)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from PIL import Image

from sdart.conditioning import Conditioning, Embeddings
from sdart.conditioning.extra_networks import extract_extra_networks
from sdart.images.initimage import fit, open_init_image, open_mask
from sdart.loading import ReadyModel
from sdart.models.loratags import PromptLoras
from sdart.request import GenerationRequest
from sdart.run.conditioning import calls_per_step, request_conditioning
from sdart.run.hires import hires_pass, hires_prompts, hires_sampler, hires_steps
from sdart.run.infotext import infotext_for
from sdart.run.loras import infotext_extras
from sdart.run.passes import PassCall, call_pipeline, decode_latents, first_pass, scheduler_for
from sdart.run.postprocess import check_safety, composite_through_mask
from sdart.run.progress import BatchSteps, GenerationCancelled, StepCallback, StepProgress
from sdart.run.refiner import Switch, refiner_pass, switch_point
from sdart.run.result import Batch
from sdart.run.upscale import hires_upscaler_problem
from sdart.speed.memory import release_freed_memory
from sdart.upscalers.extras import Runner
from sdart.upscalers.names import is_latent_mode


class PassPrompts(NamedTuple):
    """What a pass's conditioning is encoded from: its prompts (without <lora:…> tags) and the steps and sampler
    its editing schedule is laid over."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler_name: str

    @property
    def texts(self) -> tuple[str, str]:
        return self.prompt, self.negative_prompt

    @property
    def calls(self) -> int:
        """The schedule's length in A1111's model calls."""
        return self.steps * calls_per_step(self.sampler_name)


class Run:
    """A resolved request (size, seeds and strength fixed) on a ready model, with the refiner's when it has one.
    `batches()` yields each batch when decoded."""

    def __init__(self, ready: ReadyModel, request: GenerationRequest, *, device: torch.device, memory: str,
                 rng: str, safety_checker: bool, on_step: StepCallback | None, is_cancelled: Callable[[], bool],
                 finish_batch: Callable[[], bool] = lambda: False, loras: PromptLoras | None = None,
                 embeddings: Embeddings | None = None, refiner: ReadyModel | None = None,
                 refiner_embeddings: Embeddings | None = None, upscaling: Runner | None = None):
        self.ready = ready
        self.request = request
        # The prompt's `<lora:…>` tags are applied to the weights (Engine), not read by the text encoder; the
        # infotext keeps the prompt as typed and names them in `Lora hashes`.
        self.prompt = extract_extra_networks(request.prompt)[0]
        self.run_extras = infotext_extras(loras) if loras is not None else {}
        self.embeddings = embeddings
        self.refiner_embeddings = refiner_embeddings
        self.device = device
        self.memory = memory
        # Noise drawn on the CPU by default, so that a seed gives the same image on CPU and GPU.
        self.rng_device = "cpu" if rng == "cpu" else device
        self.safety_checker = safety_checker
        self.on_step = on_step
        self.is_cancelled = is_cancelled
        self.finish_batch = finish_batch  # A1111's interrupt/skip: end the batch here, decode what it has
        self.started = time.perf_counter()
        # The first pass: txt2img draws the size from noise; img2img starts from the fitted picture; inpainting
        # redraws it only under the mask.
        self.pipe = ready.pipeline
        self.init = self.mask = None
        if request.init_image:
            self.init = fit(open_init_image(request.init_image), request.width, request.height, request.resize_mode)
            self.pipe = ready.twin("img2img")
        if request.mask:
            self.mask = open_mask(request.mask, request.width, request.height, request.resize_mode,
                                  request.mask_blur, request.inpainting_mask_invert)
            self.pipe = ready.twin("inpaint")
        # The passes after it: hires fix redraws through the img2img twin; the refiner takes over the last pass.
        self.hires_pipe = None
        self.upscaling = upscaling or Runner(device=str(device))
        if request.enable_hr:
            if problem := hires_upscaler_problem(request.hr_upscaler, self.upscaling.folder):
                raise ValueError(f"hr_upscaler = {request.hr_upscaler!r}: {problem}")
            self.hires_pipe = ready.twin("img2img")
        self.refiner = refiner
        self.switch = self._refiner_switch() if refiner is not None else None
        self.planned = self._planned_steps()

    # --- the plan ----------------------------------------------------------------------------------------

    def _last_pass(self) -> tuple[str, str, int, float | None]:
        """(sampler, schedule type, schedule length, strength) of the pass the refiner takes over."""
        request = self.request
        if request.enable_hr:
            steps, strength = hires_steps(request.hr_second_pass_steps or request.steps, request.denoising_strength,
                                          self.ready.base_scheduler_config.get("num_train_timesteps", 1000))
            return (*hires_sampler(request), steps, strength)
        strength = request.denoising_strength if self.init is not None else None
        return request.sampler_name, request.scheduler, request.steps, strength

    def _refiner_switch(self) -> Switch | None:
        sampler, schedule, steps, strength = self._last_pass()
        scheduler = scheduler_for(sampler, schedule, self.ready)
        return switch_point(scheduler, steps, strength, self.request.refiner_switch_at)

    def _planned_steps(self) -> list[int]:
        """Each pass's steps, as progress expects them (corrected by each pipeline when its pass starts)."""
        request = self.request
        first = request.steps if self.init is None else int(request.steps * request.denoising_strength)
        planned = [first]
        if request.enable_hr:
            planned.append(min(request.hr_second_pass_steps or request.steps, self._last_pass()[2]))
        if self.switch is not None:
            planned[-1:] = [self.switch.base_steps, self.switch.refiner_steps]
        return planned

    # --- the batches -------------------------------------------------------------------------------------

    def _encode(self) -> None:
        """Each pass's prompts as the UNet sees them, encoded once per run (each distinct text of the editing
        schedules once): the first pass's; the hires pass's (the first's when it has the same prompts and, with
        prompt editing, the same schedule); the refiner's through the refiner's own encoder."""
        request = self.request
        first = PassPrompts(self.prompt, request.negative_prompt, request.steps, request.sampler_name)
        self.conditioning = self._conditioning(self.pipe, self.embeddings, first)
        self.hires_conditioning = self.refiner_conditioning = None
        last = first
        if request.enable_hr:
            last = PassPrompts(*hires_prompts(request, self.prompt), request.hr_second_pass_steps or request.steps,
                               hires_sampler(request)[0])
            reusable = last.texts == first.texts and (self.conditioning.is_static or last.calls == first.calls)
            self.hires_conditioning = (self.conditioning if reusable
                                       else self._conditioning(self.hires_pipe, self.embeddings, last))
        if self.switch is not None:
            self.refiner_conditioning = self._conditioning(self.refiner.pipeline, self.refiner_embeddings, last)

    def _conditioning(self, pipe, embeddings: Embeddings | None, prompts: PassPrompts) -> Conditioning:
        return request_conditioning(pipe, self.request, embeddings, prompt=prompts.prompt,
                                    negative_prompt=prompts.negative_prompt, steps=prompts.steps,
                                    sampler_name=prompts.sampler_name)

    def batches(self) -> Iterator[Batch]:
        request = self.request
        self._encode()
        for iteration in range(request.n_iter):
            if self.is_cancelled():
                raise GenerationCancelled()
            # A1111's seeds of image i: seed + i, or with variation seeds the seed and subseed + i.
            first = iteration * request.batch_size
            seeds, subseeds = zip(*(request.image_seeds(first + j) for j in range(request.batch_size)))
            yield self._batch(iteration, list(seeds), list(subseeds))

    def _batch(self, iteration: int, seeds: list[int], subseeds: list[int]) -> Batch:
        request = self.request
        hires_in_latents = request.enable_hr and is_latent_mode(request.hr_upscaler)
        # 1. One generator per image, so that each image depends only on its own seeds, on any batch size.
        generators = [torch.Generator(self.rng_device).manual_seed(seed) for seed in seeds]
        steps = BatchSteps(self.planned)
        marks: list[float] = []
        call_started = time.perf_counter()
        step_end = self._step_end(iteration, steps, marks, call_started)

        def run(call: PassCall, output_type: str):
            output = call_pipeline(call, on_step_end=step_end, output_type=output_type)
            steps.next_pass()
            return output

        # 2. The first pass, left in latent space when a latent upscale or the refiner comes next.
        until = self.switch.at if self.switch is not None and not request.enable_hr else None
        last = first_pass(self.pipe, request, init=self.init, mask=self.mask, seeds=seeds, subseeds=subseeds,
                          generators=generators, ready=self.ready, until=until, prompt=self.prompt,
                          conditioning=self.conditioning)
        output = run(last, "latent" if hires_in_latents or until is not None else "pil")
        # 3. Hires fix: the first pass upscaled and redrawn at the hires size (A1111 skips it, and the refiner,
        # when the batch was ended early: the first pass is then decoded as it is).
        if request.enable_hr and not self.finish_batch():
            until = self.switch.at if self.switch is not None else None
            last = hires_pass(self.hires_pipe, request, output, seeds=seeds, subseeds=subseeds,
                              ready=self.ready, rng_device=self.rng_device, upscaling=self.upscaling,
                              prompt=hires_prompts(request, self.prompt)[0], conditioning=self.hires_conditioning,
                              until=until)
            output = run(last, "latent" if until is not None else "pil")
        # 4. The refiner takes over the last pass's remaining steps.
        if self.switch is not None and not self.finish_batch():
            _, schedule, _, _ = self._last_pass()
            output = run(refiner_pass(self.refiner.twin("img2img"), last, output, self.switch, schedule=schedule,
                                      ready=self.refiner, conditioning=self.refiner_conditioning), "pil")
        if isinstance(output, torch.Tensor):  # a batch ended before the pass that would have decoded it
            output = decode_latents(last.pipe, output)
        finished = time.perf_counter()
        return self._finish(iteration, seeds, subseeds, output, marks, call_started, finished)

    def _step_end(self, iteration: int, steps: BatchSteps, marks: list[float], call_started: float):
        request = self.request
        trim_before_decode = self.device.type == "cpu"
        trim_every_step = trim_before_decode and self.memory in ("low", "minimal")

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            marks.append(time.perf_counter())
            pass_total = getattr(pipeline, "num_timesteps", None) or request.steps
            step, total = steps.at(step_index, pass_total)
            if self.on_step is not None:
                batch_elapsed = marks[-1] - call_started
                self.on_step(StepProgress(step, total, iteration, request.n_iter, marks[-1] - self.started,
                                          len(marks) / batch_elapsed if batch_elapsed else 0.0,
                                          latents=callback_kwargs.get("latents")))
            if self.finish_batch():
                pipeline._interrupt = True  # diffusers skips the remaining steps and decodes these latents
                return callback_kwargs
            if self.is_cancelled():
                raise GenerationCancelled()
            if trim_every_step or (trim_before_decode and step_index + 1 == pass_total):
                # The VAE's or the next pass's peak then starts from the weights, not from cached steps. No garbage
                # collection: activations are freed by reference count, and a collection costs 0.3 s with SD 1.5.
                release_freed_memory(collect=False)
            return callback_kwargs

        return step_end

    def _finish(self, iteration: int, seeds: list[int], subseeds: list[int], images: list[Image.Image],
                marks: list[float], call_started: float, finished: float) -> Batch:
        if self.mask is not None:
            images = composite_through_mask(images, self.init, self.mask)
        nsfw = (check_safety(self.ready.checker, self.ready.feature_extractor, images)
                if self.safety_checker else None)
        refiner = self.refiner.loaded if self.switch is not None else None
        infotexts = [infotext_for(self.request, seed, model=self.ready.loaded, model_extras=self.ready.infotext_extras,
                                  prompt_extras=self.conditioning.infotext_params(), run_extras=self.run_extras,
                                  batch_pos=position, batch_size=len(seeds), subseed=subseed, refiner=refiner)
                     for position, (seed, subseed) in enumerate(zip(seeds, subseeds))]
        return Batch(iteration, images, seeds, infotexts, nsfw, batch_timings(marks, call_started, finished))


def batch_timings(marks: list[float], call_started: float, finished: float) -> dict[str, float]:
    """Per-step time from the step marks; the fixed cost is the rest (text encoding before the first step, the VAE
    decode after the last, and between passes the upscale): what is paid once per batch."""
    if len(marks) > 1:
        step_s = (marks[-1] - marks[0]) / (len(marks) - 1)
    else:
        step_s = marks[0] - call_started if marks else 0.0
    total = finished - call_started
    return {"total_s": total, "step_s": step_s, "it_per_s": 1 / step_s if step_s else 0.0,
            "fixed_s": total - step_s * len(marks)}
