"""The Engine: one loaded model, and `generate(request) → GenerationResult`. Every front end (CLI, Python, server,
batch) goes through it; each job behind it is its own module: loading (sdart.loading), the denoising run
(sdart.run.batches), post-processing and metadata (sdart.run.postprocess, sdart.run.infotext)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sdart.conditioning import Conditioning, Embeddings
from sdart.conditioning.embeddings import EmbeddingFolder
from sdart.conditioning.encoder import encoder_widths, text_encoders
from sdart.images.initimage import default_size, picture_size
from sdart.loading import ReadyModel, prepare_model, speed_options
from sdart.models.errors import ModelLoadError
from sdart.models.load import LoadedModel
from sdart.models.lora import parse_lora
from sdart.models.lorafiles import LoraFolder
from sdart.models.loratags import PromptLoras
from sdart.models.vaes import OWN_VAE, find_vaes
from sdart.request import MAX_RANDOM_SEED, GenerationRequest, RequestError
from sdart.run.batches import Run
from sdart.run.conditioning import request_conditioning
from sdart.run.infotext import infotext_for
from sdart.run.loras import infotext_extras, request_loras
from sdart.run.progress import Cancel, GenerationCancelled, StepCallback, StepProgress, cancel_check, tqdm_callback
from sdart.run.result import Batch, GenerationResult, summarise_timings
from sdart.settings import Settings, load_settings
from sdart.speed.device import pick_device, pick_dtype
from sdart.upscalers.extras import Runner

# Importable from here as they always were: the results and progress a run hands to its caller.
__all__ = ["Batch", "Engine", "GenerationCancelled", "GenerationResult", "StepCallback", "StepProgress",
           "summarise_timings"]

log = logging.getLogger(__name__)


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
        self.speed = speed_options(self.settings, self.memory)
        self.loras = [parse_lora(text) for text in self.settings.loras]
        self.default_vae = self.settings.vae  # what a request that names no VAE gets (the server's `sd_vae`)
        self.lora_folder = LoraFolder(self.settings.lora_dir)  # what `<lora:NAME>` prompt tags name
        # Textual-inversion words: the folder is read again when its files change, and sorted per loaded model.
        self.embedding_folder = EmbeddingFolder(self.settings.embeddings_dir) if self.settings.embeddings_dir else None
        self._lock = threading.Lock()
        self.ready: ReadyModel
        self.refiner: ReadyModel | None = None  # the last refiner asked for, kept for the next request
        self.upscaling = Runner.of_settings(self.settings, str(self.device))  # hires fix's upscalers
        self.load(model or self.settings.model)

    # --- model -------------------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        return self.ready.loaded

    @property
    def reference(self) -> str:
        return self.model.spec.reference

    @property
    def load_s(self) -> float:
        return self.ready.load_s

    @property
    def compiled(self):
        """Which components run compiled (sdart.speed.compiled.CompiledComponents; `.status()` for health)."""
        return self.ready.compiled

    def load(self, reference: str) -> None:
        """Load `reference` (replacing the current model); ModelLoadError explains failures."""
        self.ready = prepare_model(reference, self.settings, device=self.device, dtype=self.dtype,
                                   memory=self.memory, speed=self.speed, loras=self.loras,
                                   safety_checker=self.safety_checker)

    def use_vae(self, reference: str | None) -> None:
        """Decode with another VAE (a file, folder or hub id; None: the model's own). Reloads the model, so that every
        memory mode and speed option applies to the new VAE as at start."""
        self.settings = self.settings.model_copy(update={"vae": reference})
        self.load(self.reference)

    def _ensure_model(self, request: GenerationRequest) -> None:
        if request.model and request.model != self.reference:
            self.load(request.model)
        wanted = self._vae_reference(request.vae)
        if wanted != self.settings.vae:
            self.use_vae(wanted)

    def _vae_reference(self, vae: str | None) -> str | None:
        """A request's VAE as a reference: a name from the VAE folder becomes its path."""
        if vae is None:
            return self.default_vae
        if vae in OWN_VAE:
            return None
        return str(find_vaes(self.settings.vae_dir).get(vae, vae))

    def embeddings(self) -> Embeddings:
        """The embeddings folder's words sorted for the loaded model: `loaded` and `skipped` (A1111's
        /sdapi/v1/embeddings); empty without an embeddings folder."""
        return self._embeddings_for(self.model.pipeline)

    def _embeddings_for(self, pipeline: Any) -> Embeddings:
        if self.embedding_folder is None:
            return Embeddings()
        return self.embedding_folder.for_model(encoder_widths(text_encoders(pipeline)))

    def _ensure_refiner(self, request: GenerationRequest) -> ReadyModel | None:
        """The request's SDXL refiner, loaded like the model (same device, dtype and memory mode; no LoRA: they
        are made for the base) and kept until another is asked for."""
        reference = request.refiner_checkpoint
        if reference is None:
            return None
        if self.model.family != "sdxl":
            raise RequestError([("refiner_checkpoint", reference, f"a refiner takes over an SDXL model's last steps; "
                                                                  f"{self.reference} is {self.model.family}")])
        if self.refiner is None or self.refiner.loaded.spec.reference != reference:
            self.refiner = None  # the old one's memory goes before the new one loads
            try:
                refiner = prepare_model(reference, self.settings, device=self.device, dtype=self.dtype,
                                        memory=self.memory, speed=self.speed, loras=[], safety_checker=False)
            except ModelLoadError as exc:
                raise ModelLoadError(exc.kind, f"refiner_checkpoint = {reference!r}: {exc}") from exc
            if refiner.loaded.family != "sdxl":
                raise RequestError([("refiner_checkpoint", reference,
                                     f"is an {refiner.loaded.family} model; a refiner of an SDXL model is SDXL")])
            self.refiner = refiner
        return self.refiner

    # --- generation --------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, negative_prompt: str = "", **fields: Any) -> Conditioning:
        """What the UNet will see for these prompts (and request fields such as steps, sampler_name, clip_skip,
        emphasis): `.at_step(n)` gives the pipeline's prompt_embeds and the rest.

        >>> engine.encode_prompt("a (red:1.3) fox").at_step(0)["prompt_embeds"].shape
        torch.Size([1, 77, 768])
        """
        request = GenerationRequest.parse({"prompt": prompt, "negative_prompt": negative_prompt, **fields})
        self._ensure_model(request)
        with self._lock:
            return request_conditioning(self.model.pipeline, request, self.embeddings())

    def resolve_request(self, request: GenerationRequest) -> GenerationRequest:
        """Fill in what the request left to the model and the dice: size, seeds (random ones below 2**32, as
        A1111 draws them) and the denoising strength (A1111's 0.75 for img2img, 0.7 for hires fix)."""
        size = self.model.native_size
        dice = random.SystemRandom()
        seed = request.seed if request.seed >= 0 else dice.randrange(0, MAX_RANDOM_SEED - request.images_total)
        subseed = request.subseed
        if request.subseed_strength and subseed < 0:
            subseed = dice.randrange(0, MAX_RANDOM_SEED - request.images_total)
        strength = request.denoising_strength
        if strength is None and (request.init_image or request.enable_hr):
            strength = 0.7 if request.enable_hr else 0.75
        width, height = size, size
        if request.init_image and not (request.width and request.height):  # img2img: the picture's aspect ratio
            width, height = default_size(picture_size(request.init_image), size)
        return request.replace(width=request.width or width, height=request.height or height, seed=seed,
                               subseed=subseed, denoising_strength=strength)

    def generate(
        self,
        request: GenerationRequest | None = None,
        /,
        *,
        on_step: StepCallback | None = None,
        cancel: Cancel = None,
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
        loras = self.prompt_loras(result.request)
        result.warnings = loras.warnings
        bar = None
        if on_step is None and progress is not False:
            on_step, bar = tqdm_callback()
        batch_timings: list[dict[str, float]] = []
        try:
            for batch in self._run(result.request, loras, on_step=on_step, cancel=cancel):
                result.add(batch)
                batch_timings.append(batch.timings)
        except GenerationCancelled:
            pass
        finally:
            if bar is not None:
                bar.close()
        result.cancelled = len(result.images) < request.images_total
        result.timings = summarise_timings(batch_timings, len(result.images), self.load_s)
        return result

    def iter_batches(self, request: GenerationRequest, *, on_step: StepCallback | None = None,
                     cancel: Cancel = None, finish_batch: Callable[[], bool] | None = None) -> Iterator[Batch]:
        """Yield each batch as soon as it is decoded (front ends save them as they come).

        Raises GenerationCancelled when `cancel` fires; batches already yielded are complete. `finish_batch`, checked
        after each step before `cancel`, ends the current batch there and decodes what its latents hold (A1111's
        interrupt and skip keep the picture so far).
        """
        # 1. Load the requested model if it isn't the loaded one.
        self._ensure_model(request)
        # 2. Resolve size, seeds and strength (a no-op for a resolved request).
        request = self.resolve_request(request)
        # 3. The prompt's LoRA tags, looked up before anything runs.
        yield from self._run(request, self.prompt_loras(request), on_step=on_step, cancel=cancel,
                             finish_batch=finish_batch)

    def _run(self, request: GenerationRequest, loras: PromptLoras, *, on_step: StepCallback | None,
             cancel: Cancel, finish_batch: Callable[[], bool] | None = None) -> Iterator[Batch]:
        """A resolved request's batches with its looked-up LoRAs."""
        for warning in loras.warnings:
            log.warning("%s", warning)
        refiner = self._ensure_refiner(request)
        # 4. The run: its passes (first, hires, refiner), one pipeline call each per batch, with the LoRAs on the
        # weights for this run only.
        run = Run(self.ready, request, device=self.device, memory=self.memory, rng=self.settings.rng,
                  safety_checker=self.safety_checker, on_step=on_step, is_cancelled=cancel_check(cancel),
                  finish_batch=finish_batch or (lambda: False), loras=loras, embeddings=self.embeddings(),
                  refiner=refiner, upscaling=self.upscaling,
                  refiner_embeddings=self._embeddings_for(refiner.pipeline) if refiner is not None else None)
        with self._lock, self.ready.lora_switch.applied(loras.loras):
            yield from run.batches()

    def prompt_loras(self, request: GenerationRequest) -> PromptLoras:
        """The LoRAs `request`'s prompt tags name in the LoRA folder, and what is not applied (`warnings`). With
        `missing_lora="error"` (the default) an unknown name raises RequestError naming `prompt` and the folder.
        Whether the files fit is checked against the loaded model only when the request runs on it."""
        loaded = not request.model or request.model == self.reference
        return request_loras(request, self.lora_folder, self.ready if loaded else None, memory=self.memory,
                             device=self.device)

    def infotext(self, request: GenerationRequest, seed: int, batch_pos: int = 0, batch_size: int = 1,
                 subseed: int = -1) -> str:
        """The infotext this engine writes for `request`'s image with `seed` (and `subseed`), but for what only the
        run knows: the conditioning's keys (`TI hashes`, `Emphasis`) and whether the refiner took over (a switch it
        never reaches leaves `Refiner` out)."""
        refiner = self.refiner.loaded if request.refiner_checkpoint and self.refiner is not None else None
        return infotext_for(request, seed, model=self.model, model_extras=self.ready.infotext_extras,
                            batch_pos=batch_pos, batch_size=batch_size, subseed=subseed, refiner=refiner,
                            run_extras=infotext_extras(self.prompt_loras(request)))
