"""The Engine: one loaded model, and `generate(request) → GenerationResult`. The only module that calls diffusers
pipelines; every front end (CLI, Python, server, batch) goes through it."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdart.version import __version__
from sdart.images.infotext import format_infotext
from sdart.images.initimage import default_size, fit, open_init_image, open_mask, picture_size
from sdart.images.output import png_bytes, save_image
from sdart.models.load import LoadedModel, WeightLayout, load, load_vae
from sdart.models.lora import apply_loras, infotext_value, parse_lora
from sdart.models.resolve import resolve
from sdart.request import MAX_SEED, GenerationRequest
from sdart.sampling.samplers import find_sampler, make_scheduler
from sdart.settings import Settings, load_settings
from sdart.speed.compile import compile_unet
from sdart.speed.device import pick_device, pick_dtype
from sdart.speed.memory import apply_memory_mode, release_freed_memory, return_large_blocks_on_free
from sdart.speed.options import SpeedOptions, apply_speed
from sdart.speed.stepcache import reset_step_cache

log = logging.getLogger(__name__)


class GenerationCancelled(Exception):
    """Raised inside the denoising loop to stop it between two steps."""


@dataclass(frozen=True)
class StepProgress:
    """One finished denoising step. `step`/`total` count within the current batch (some samplers, like Heun,
    take two model calls per step and report each); `iteration` is the batch index within `iterations`."""

    step: int
    total: int
    iteration: int
    iterations: int
    elapsed: float  # seconds since generate() started
    it_per_s: float  # steps per second in the current batch
    # The batch's latents after this step, (B, C, h, w): what a live preview is drawn from (sdart.preview).
    latents: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        return (self.iteration + self.step / self.total) / self.iterations

    @property
    def eta_s(self) -> float | None:
        return self.elapsed * (1 - self.fraction) / self.fraction if self.fraction > 0 else None


@dataclass
class Batch:
    """The images of one pipeline call (`batch_size` images, consecutive seeds)."""

    iteration: int
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    nsfw: list[bool] | None
    timings: dict[str, float]


@dataclass
class GenerationResult:
    request: GenerationRequest  # resolved: the seed, width and height actually used
    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    nsfw: list[bool] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False

    def save(self, directory: str | Path | None = None) -> list[Path]:
        """Write the images as PNGs with their `parameters` chunk; existing files are never overwritten."""
        return [save_image(image, text, seed, directory or "outputs") for image, text, seed in
                zip(self.images, self.infotexts, self.seeds)]

    def grid(self, columns: int | None = None) -> Image.Image:
        """All images tiled in one picture (for notebooks and previews)."""
        if not self.images:
            raise ValueError("no images to show (the run was cancelled before the first batch finished)")
        columns = columns or math.ceil(math.sqrt(len(self.images)))
        rows = math.ceil(len(self.images) / columns)
        w, h = self.images[0].size
        sheet = Image.new("RGB", (columns * w, rows * h), "white")
        for i, image in enumerate(self.images):
            sheet.paste(image, ((i % columns) * w, (i // columns) * h))
        return sheet

    def _repr_png_(self) -> bytes | None:  # Jupyter shows the result inline
        if not self.images:
            return None
        return png_bytes(self.grid())


StepCallback = Callable[[StepProgress], None]


class Engine:
    """Owns one loaded model on one device.

    >>> engine = Engine("CompVis/stable-diffusion-v1-4")
    >>> result = engine.generate(prompt="a fox in the snow", seed=42, steps=25)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        settings: Settings | None = None,
        device: str | None = None,
        dtype: str | None = None,
        memory: str | None = None,
        safety_checker: bool | None = None,
    ):
        self.settings = settings or load_settings()
        self.device = pick_device(device or self.settings.device)
        self.dtype = pick_dtype(dtype or self.settings.dtype, self.device)
        self.memory = memory or self.settings.memory
        self.safety_checker = self.settings.safety_checker if safety_checker is None else safety_checker
        self.speed = SpeedOptions(
            channels_last=self.settings.channels_last,
            fuse_qkv=self.settings.fuse_qkv and self.memory == "balanced",
            compile=self.settings.compile,
            compile_cache_dir=self.settings.compile_cache_dir,
            threads=self.settings.threads,
            step_cache=self.settings.step_cache,
            token_downsampling=self.settings.token_downsampling,
            quantize=self.settings.quantize,
        )
        self.loras = [parse_lora(text) for text in self.settings.loras]
        self._lock = threading.Lock()
        self.model: LoadedModel
        self.load_s = 0.0
        self.load(model or self.settings.model)

    # --- model -------------------------------------------------------------------------------------------

    @property
    def reference(self) -> str:
        return self.model.spec.reference

    def load(self, reference: str) -> None:
        """Load `reference` (replacing the current model); ModelLoadError explains failures."""
        _quiet_libraries()
        spec = resolve(reference, self.settings.model_config_dir)
        started = time.perf_counter()
        if self.device.type == "cpu" and self.memory in ("low", "minimal"):
            return_large_blocks_on_free()  # before loading, so that the load's large blocks don't fragment the heap
        # int8 while streaming only without LoRA: adapters fuse into full-precision weights (quantized afterwards).
        layout = WeightLayout(int8=self.speed.quantize == "int8" and not self.loras,
                              channels_last=self.speed.channels_last)
        vae = load_vae(self.settings.vae, self.dtype) if self.settings.vae else None
        loaded = load(spec, self.dtype, safety_checker=self.safety_checker, layout=layout, vae=vae)
        pipe = loaded.pipeline
        if self.loras:
            apply_loras(pipe, self.loras)
        pipe.set_progress_bar_config(disable=True)
        # The checker runs after decoding so that flagged images are reported rather than blackened.
        self._checker = (getattr(pipe, "safety_checker", None), getattr(pipe, "feature_extractor", None))
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None
        if self.safety_checker and self._checker[0] is None:
            log.warning("%s ships no safety checker; images will not be checked", reference)
        self._base_scheduler_config = dict(pipe.scheduler.config)
        apply_speed(pipe, self.speed, self.device)
        apply_memory_mode(pipe, self.memory, self.device)
        if self._checker[0] is not None and self.memory == "balanced":
            self._checker[0].to(self.device)  # kept off the pipeline, so pipe.to() did not move it
        if self.speed.compile and self.speed.step_cache:
            log.warning("step cache and compile don't combine (the cache switches the UNet's graph each step); "
                        "compile is skipped")
        elif self.speed.compile:
            compile_unet(pipe, self.speed, self.device)  # after offload hooks, around the final module
        self.model = loaded
        self._twins: dict[str, Any] = {}  # img2img / inpainting pipelines built from this one (_twin)
        release_freed_memory()  # conversion buffers of the load
        self.load_s = time.perf_counter() - started
        log.info("loaded %s (%s) on %s in %s in %.1f s", reference, loaded.family, self.device, self.dtype, self.load_s)

    # --- generation --------------------------------------------------------------------------------------

    def _ensure_model(self, request: GenerationRequest) -> None:
        if request.model and request.model != self.reference:
            self.load(request.model)

    def resolve_request(self, request: GenerationRequest) -> GenerationRequest:
        """Fill in what the request left to the model and the dice: size and seed."""
        size = self.model.native_size
        seed = request.seed if request.seed >= 0 else random.SystemRandom().randrange(0, MAX_SEED - request.images_total)
        width, height = size, size
        if request.init_image and not (request.width and request.height):  # img2img: the picture's aspect ratio
            width, height = default_size(picture_size(request.init_image), size)
        return request.replace(width=request.width or width, height=request.height or height, seed=seed)

    def generate(
        self,
        request: GenerationRequest | None = None,
        /,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
        progress: bool | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Run a request (or keyword fields) to completion or cancellation.

        `on_step` is called after every denoising step; `cancel` (an Event or a function) is checked there and
        stops the run between steps, keeping the batches already finished. Without `on_step`, a tqdm.auto bar
        (a widget in Jupyter) shows progress unless `progress=False`.
        """
        request = request.replace(**fields) if request is not None and fields else request
        request = request or GenerationRequest.parse(fields)
        self._ensure_model(request)
        result = GenerationResult(self.resolve_request(request))
        bar = None
        if on_step is None and progress is not False:
            on_step, bar = _tqdm_callback()
        batch_timings: list[dict[str, float]] = []
        try:
            for batch in self.iter_batches(result.request, on_step=on_step, cancel=cancel):
                result.images += batch.images
                result.seeds += batch.seeds
                result.infotexts += batch.infotexts
                if batch.nsfw is not None:
                    result.nsfw = (result.nsfw or []) + batch.nsfw
                batch_timings.append(batch.timings)
        except GenerationCancelled:
            pass
        finally:
            if bar is not None:
                bar.close()
        result.cancelled = len(result.images) < request.images_total
        result.timings = summarise_timings(batch_timings, len(result.images), self.load_s)
        return result

    def iter_batches(
        self,
        request: GenerationRequest,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
    ) -> Iterator[Batch]:
        """Yield each batch as soon as it is decoded (front ends save them as they come).

        Raises GenerationCancelled when `cancel` fires; batches already yielded are complete.
        """
        # 1. Load the requested model if it isn't the loaded one.
        self._ensure_model(request)
        # 2. Resolve size and seed (a no-op for a resolved request); image i of the run uses seed + i.
        request = self.resolve_request(request)
        is_cancelled = _cancel_check(cancel)
        pipe = self.model.pipeline
        init = mask = None
        if request.init_image:
            init = fit(open_init_image(request.init_image), request.width, request.height, request.resize_mode)
            pipe = self._twin("img2img")
        if request.mask:
            mask = open_mask(request.mask, request.width, request.height, request.resize_mode, request.mask_blur,
                             request.inpainting_mask_invert)
            pipe = self._twin("inpaint")
        started = time.perf_counter()
        with self._lock:
            # 3. Sampler: the model's training schedule, stepped the way the A1111 name says.
            pipe.scheduler = make_scheduler(find_sampler(request.sampler_name), self._base_scheduler_config,
                                            request.scheduler)
            for iteration in range(request.n_iter):
                if is_cancelled():
                    raise GenerationCancelled()
                seeds = [request.seed + iteration * request.batch_size + j for j in range(request.batch_size)]
                yield self._run_batch(pipe, request, iteration, seeds, started, on_step, is_cancelled, init, mask)

    def _twin(self, task: str):
        """The loaded pipeline's img2img or inpainting twin: the same components (and so the same speed settings,
        LoRAs and memory), only the denoising loop differs."""
        if task not in self._twins:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            kind = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForImage2Image
            self._twins[task] = kind.from_pipe(self.model.pipeline)
            self._twins[task].set_progress_bar_config(disable=True)
        return self._twins[task]

    def _run_batch(self, pipe, request, iteration, seeds, started, on_step, is_cancelled, init=None,
                   mask=None) -> Batch:
        # 4. One generator per image so that each image depends only on its own seed, on any batch size;
        #    drawn on the CPU by default so that a seed gives the same image on CPU and GPU.
        rng_device = "cpu" if self.settings.rng == "cpu" else self.device
        generators = [torch.Generator(rng_device).manual_seed(seed) for seed in seeds]
        marks: list[float] = []
        call_started = time.perf_counter()
        trim_before_decode = self.device.type == "cpu"
        trim_every_step = trim_before_decode and self.memory in ("low", "minimal")

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            marks.append(time.perf_counter())
            if on_step is not None:
                batch_elapsed = marks[-1] - call_started
                total = getattr(pipeline, "num_timesteps", None) or request.steps
                on_step(StepProgress(step_index + 1, total, iteration, request.n_iter,
                                     marks[-1] - started, (step_index + 1) / batch_elapsed if batch_elapsed else 0.0,
                                     latents=callback_kwargs.get("latents")))
            if is_cancelled():
                raise GenerationCancelled()
            if trim_every_step or (trim_before_decode and step_index + 1 == getattr(pipeline, "num_timesteps",
                                                                                     request.steps)):
                # The VAE decode's peak then starts from the weights, not from cached steps. No garbage collection:
                # activations are freed by reference count, and a collection costs 0.3 s with SD 1.5 loaded.
                release_freed_memory(collect=False)
            return callback_kwargs

        # 5. Denoise and decode (a step cache starts empty: nothing carries over from the last batch).
        reset_step_cache(pipe.unet)
        # txt2img draws the size from noise; img2img starts from the fitted picture, skipping the first
        # (1 - denoising_strength) of the steps, as A1111 does.
        start = (dict(width=request.width, height=request.height) if init is None
                 else dict(image=[init] * len(seeds), strength=request.denoising_strength))
        if mask is not None:  # inpainting: the same, redrawn only under the mask
            start.update(mask_image=[mask] * len(seeds), width=request.width, height=request.height)
        output = pipe(
            prompt=[request.prompt] * len(seeds),
            negative_prompt=[request.negative_prompt] * len(seeds) if request.negative_prompt else None,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            **start,
            generator=generators,
            clip_skip=request.clip_skip - 1 or None,  # A1111 counts the last layer as 1; diffusers as 0
            callback_on_step_end=step_end,
            output_type="pil",
        )
        finished = time.perf_counter()
        images = list(output.images)
        if mask is not None:  # as A1111: the picture stays as it was outside the (blurred) mask
            images = [Image.composite(image, init, mask) for image in images]
        # 6. Safety check (opt-in): flag, don't blacken.
        nsfw = self._check_safety(images) if self.safety_checker else None
        # 7. Metadata.
        infotexts = [self.infotext(request, seed, position, len(seeds)) for position, seed in enumerate(seeds)]
        steps_s = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else (marks[0] - call_started if marks else 0.0)
        timings = {
            "total_s": finished - call_started,
            "step_s": steps_s,
            "it_per_s": 1 / steps_s if steps_s else 0.0,
            # text encoding before the first step, VAE decode after the last: the cost paid once per image batch
            "fixed_s": (finished - call_started) - steps_s * len(marks),
        }
        return Batch(iteration, images, seeds, infotexts, nsfw, timings)

    def infotext(self, request: GenerationRequest, seed: int, batch_pos: int = 0, batch_size: int = 1) -> str:
        return format_infotext(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            sampler_name=request.sampler_name,
            scheduler=request.scheduler,
            cfg_scale=request.cfg_scale,
            seed=seed,
            width=request.width,
            height=request.height,
            model_name=self.model.spec.name,
            model_hash=self.model.hash,
            clip_skip=request.clip_skip,
            extra={"VAE": self.settings.vae and Path(self.settings.vae).name, "Lora": infotext_value(self.loras),
                   "Denoising strength": request.denoising_strength if request.init_image else None,
                   "Mask blur": request.mask_blur if request.mask else None,
                   **self._approximations()},
            batch_size=batch_size,
            batch_pos=batch_pos,
            version=f"sdart {__version__}",
        )

    def _approximations(self) -> dict[str, Any]:
        """The engine options that change the picture, so that the infotext says how it was made (sdart's own
        keys: A1111 has none for these)."""
        return {
            "Step cache": self.speed.step_cache or None,
            "Token downsampling": self.speed.token_downsampling if self.speed.token_downsampling > 1 else None,
            "Weights": "int8" if self.speed.quantize == "int8" else None,
        }

    def _check_safety(self, images: list[Image.Image]) -> list[bool]:
        import numpy as np

        checker, extractor = self._checker
        if checker is None or extractor is None:
            return [False] * len(images)
        checker_device = next(checker.parameters()).device
        clip_input = extractor(images, return_tensors="pt").pixel_values.to(checker_device, checker.dtype)
        arrays = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        _, flagged = checker(images=arrays.copy(), clip_input=clip_input)
        return [bool(f) for f in flagged]


def summarise_timings(batches: list[dict[str, float]], images: int, load_s: float) -> dict[str, float]:
    """Run timings: totals summed over batches, per-step and fixed costs averaged."""
    timings = {"load_s": load_s, "total_s": sum(b["total_s"] for b in batches)}
    if batches:
        for key in ("step_s", "it_per_s", "fixed_s"):
            timings[key] = sum(b[key] for b in batches) / len(batches)
        timings["per_image_s"] = timings["total_s"] / images
    return {key: round(value, 4) for key, value in timings.items()}


def _cancel_check(cancel: threading.Event | Callable[[], bool] | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _tqdm_callback():
    from tqdm.auto import tqdm

    bar = tqdm(unit="step", leave=False)

    def on_step(p: StepProgress) -> None:
        bar.total = p.total * p.iterations
        bar.n = p.iteration * p.total + p.step
        bar.refresh()

    return on_step, bar


def _quiet_libraries() -> None:
    """diffusers and transformers log config notes users can't act on, and draw their own loading bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
