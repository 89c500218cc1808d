"""One request's batches through a ready model: pick the pass (txt2img, img2img or inpainting), call the pipeline
once per batch with one generator per image, report each step, and finish each batch (compositing, safety check,
infotext)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from PIL import Image

from sdart.conditioning.extra_networks import extract_extra_networks
from sdart.conditioning import Embeddings
from sdart.images.initimage import fit, open_init_image, open_mask
from sdart.loading import ReadyModel
from sdart.models.loratags import PromptLoras
from sdart.request import GenerationRequest
from sdart.run.conditioning import StepConditioning, request_conditioning
from sdart.run.infotext import infotext_for
from sdart.run.loras import infotext_extras
from sdart.run.postprocess import check_safety, composite_through_mask
from sdart.run.progress import GenerationCancelled, StepCallback, StepProgress
from sdart.run.result import Batch
from sdart.sampling.build import make_scheduler
from sdart.sampling.samplers import find_sampler
from sdart.speed.memory import release_freed_memory
from sdart.speed.stepcache import reset_step_cache


class Run:
    """A resolved request (size and seed fixed) on a ready model. `batches()` yields each batch when decoded."""

    def __init__(self, ready: ReadyModel, request: GenerationRequest, *, device: torch.device, memory: str,
                 rng: str, safety_checker: bool, on_step: StepCallback | None, is_cancelled: Callable[[], bool],
                 finish_batch: Callable[[], bool] = lambda: False, loras: PromptLoras | None = None,
                 embeddings: Embeddings | None = None):
        self.ready = ready
        self.request = request
        # The prompt's `<lora:…>` tags are applied to the weights (Engine), not read by the text encoder; the
        # infotext keeps the prompt as typed and names them in `Lora hashes`.
        self.prompt = extract_extra_networks(request.prompt)[0]
        self.run_extras = infotext_extras(loras) if loras is not None else {}
        self.embeddings = embeddings
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

    def batches(self) -> Iterator[Batch]:
        request = self.request
        # The model's training schedule, stepped the way the A1111 sampler name says.
        self.pipe.scheduler = make_scheduler(find_sampler(request.sampler_name), self.ready.base_scheduler_config,
                                             request.scheduler, family=self.ready.loaded.family)
        # The prompts as the UNet sees them: each distinct text of the editing schedules encoded once per run.
        self.conditioning = request_conditioning(self.pipe, request, self.embeddings, prompt=self.prompt)
        for iteration in range(request.n_iter):
            if self.is_cancelled():
                raise GenerationCancelled()
            # Image i of the run uses seed + i.
            seeds = [request.seed + iteration * request.batch_size + j for j in range(request.batch_size)]
            yield self._batch(iteration, seeds)

    def _pass_inputs(self, count: int) -> dict:
        """The pipeline arguments that say where the pass starts: noise of the size, or the picture (skipping the
        first (1 - denoising_strength) of the steps, as A1111 does), and the mask."""
        request = self.request
        if self.init is None:
            return dict(width=request.width, height=request.height)
        inputs = dict(image=[self.init] * count, strength=request.denoising_strength)
        if self.mask is not None:
            inputs.update(mask_image=[self.mask] * count, width=request.width, height=request.height)
        return inputs

    def _step_end(self, iteration: int, marks: list[float], call_started: float, prompts: StepConditioning):
        request = self.request
        trim_before_decode = self.device.type == "cpu"
        trim_every_step = trim_before_decode and self.memory in ("low", "minimal")

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            marks.append(time.perf_counter())
            total = getattr(pipeline, "num_timesteps", None) or request.steps
            if self.on_step is not None:
                batch_elapsed = marks[-1] - call_started
                self.on_step(StepProgress(step_index + 1, total, iteration, request.n_iter, marks[-1] - self.started,
                                          (step_index + 1) / batch_elapsed if batch_elapsed else 0.0,
                                          latents=callback_kwargs.get("latents")))
            if self.finish_batch():
                pipeline._interrupt = True  # diffusers skips the remaining steps and decodes these latents
                return callback_kwargs
            if self.is_cancelled():
                raise GenerationCancelled()
            if trim_every_step or (trim_before_decode and step_index + 1 == total):
                # The VAE decode's peak then starts from the weights, not from cached steps. No garbage collection:
                # activations are freed by reference count, and a collection costs 0.3 s with SD 1.5 loaded.
                release_freed_memory(collect=False)
            callback_kwargs.update(prompts.next_step(pipeline, step_index, callback_kwargs))  # prompt editing
            return callback_kwargs

        return step_end

    def _batch(self, iteration: int, seeds: list[int]) -> Batch:
        request = self.request
        # One generator per image, so that each image depends only on its own seed, on any batch size.
        generators = [torch.Generator(self.rng_device).manual_seed(seed) for seed in seeds]
        marks: list[float] = []
        call_started = time.perf_counter()
        reset_step_cache(self.pipe.unet)  # a step cache starts empty: nothing carries over from the last batch
        prompts = StepConditioning(self.conditioning, request.sampler_name, len(seeds))
        output = self.pipe(
            **prompts.pipeline_kwargs(),  # prompt_embeds, negative_prompt_embeds (+ SDXL's pooled ones)
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            **self._pass_inputs(len(seeds)),
            generator=generators,
            callback_on_step_end=self._step_end(iteration, marks, call_started, prompts),
            callback_on_step_end_tensor_inputs=["latents", *prompts.tensor_inputs(self.pipe)],
            output_type="pil",
        )
        finished = time.perf_counter()
        return self._finish(iteration, seeds, list(output.images), marks, call_started, finished)

    def _finish(self, iteration: int, seeds: list[int], images: list[Image.Image], marks: list[float],
                call_started: float, finished: float) -> Batch:
        if self.mask is not None:
            images = composite_through_mask(images, self.init, self.mask)
        nsfw = (check_safety(self.ready.checker, self.ready.feature_extractor, images)
                if self.safety_checker else None)
        infotexts = [infotext_for(self.request, seed, model=self.ready.loaded, model_extras=self.ready.infotext_extras,
                                  prompt_extras=self.conditioning.infotext_params(), run_extras=self.run_extras,
                                  batch_pos=position, batch_size=len(seeds)) for position, seed in enumerate(seeds)]
        return Batch(iteration, images, seeds, infotexts, nsfw, batch_timings(marks, call_started, finished))


def batch_timings(marks: list[float], call_started: float, finished: float) -> dict[str, float]:
    """Per-step time from the step marks; the fixed cost is the rest (text encoding before the first step, the VAE
    decode after the last): what is paid once per batch."""
    if len(marks) > 1:
        step_s = (marks[-1] - marks[0]) / (len(marks) - 1)
    else:
        step_s = marks[0] - call_started if marks else 0.0
    total = finished - call_started
    return {"total_s": total, "step_s": step_s, "it_per_s": 1 / step_s if step_s else 0.0,
            "fixed_s": total - step_s * len(marks)}
