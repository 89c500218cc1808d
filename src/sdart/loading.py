"""A model made ready to run: loaded (streamed, int8 where asked), LoRAs fused, speed and memory settings applied,
the safety checker set aside; and its img2img and inpainting twins, built on first use."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from sdart.models.load import LoadedModel, WeightLayout, load, load_vae, prefetch_weights
from sdart.models.lora import LoraRef, apply_loras, infotext_value
from sdart.models.loraswitch import LoraSwitch
from sdart.models.resolve import resolve
from sdart.models.vaes import is_vae_file, load_vae_file
from sdart.settings import Settings
from sdart.speed.compiled import CompiledComponents, attach_compiled
from sdart.speed.memory import apply_memory_mode, release_freed_memory, return_large_blocks_on_free
from sdart.speed.options import SpeedOptions, apply_speed

log = logging.getLogger(__name__)


@dataclass
class ReadyModel:
    """A loaded model on its device, with what the run needs besides the pipeline."""

    loaded: LoadedModel
    checker: Any  # the model's safety checker, kept off the pipeline so that flagged images are not blackened
    feature_extractor: Any
    base_scheduler_config: dict[str, Any]  # the model's own scheduler config: every sampler is built from it
    infotext_extras: dict[str, Any]  # what the model was made ready with that changes the picture (VAE, LoRA, …)
    load_s: float
    compiled: CompiledComponents | None = None  # the UNet's and VAE decoder's compiled artifacts (sdart.speed.compiled)
    _twins: dict[str, Any] = field(default_factory=dict)

    @property
    def pipeline(self):
        return self.loaded.pipeline

    @cached_property
    def lora_switch(self) -> LoraSwitch:
        """Applies a request's LoRA tags to this model's weights for its run (the twins share the weights)."""
        return LoraSwitch(self.pipeline)

    def twin(self, task: str):
        """The img2img ("img2img") or inpainting ("inpaint") twin: the same components (and so the same speed
        settings, LoRAs and memory), only the denoising loop differs."""
        if task not in self._twins:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            kind = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForImage2Image
            twin = kind.from_pipe(self.pipeline)
            if "requires_aesthetics_score" in twin.config:
                # An SDXL refiner loads as a text-to-image pipeline, which has no such setting: its UNet says.
                twin.register_to_config(requires_aesthetics_score=takes_aesthetic_score(twin))
            twin.set_progress_bar_config(disable=True)
            self._twins[task] = twin
        return self._twins[task]


def takes_aesthetic_score(pipe) -> bool:
    """Whether an SDXL UNet's added time embedding holds 5 numbers (original size, crop, aesthetic score: the
    refiner's) rather than 6 (original size, crop, target size: the base's)."""
    unet, encoder = pipe.unet.config, pipe.text_encoder_2
    if encoder is None or not unet.get("addition_time_embed_dim"):
        return False
    pooled = encoder.config.projection_dim
    return unet.projection_class_embeddings_input_dim == 5 * unet.addition_time_embed_dim + pooled


def speed_options(settings: Settings, memory: str) -> SpeedOptions:
    return SpeedOptions(
        channels_last=settings.channels_last,
        fuse_qkv=settings.fuse_qkv and memory == "balanced",
        threads=settings.threads,
        step_cache=settings.step_cache,
        token_downsampling=settings.token_downsampling,
        quantize=settings.quantize,
    )


def prepare_model(reference: str, settings: Settings, *, device: torch.device, dtype: torch.dtype, memory: str,
                  speed: SpeedOptions, loras: list[LoraRef], safety_checker: bool) -> ReadyModel:
    """Load `reference` and make it ready on `device`; ModelLoadError explains failures."""
    spec = resolve(reference, settings.model_config_dir)
    started = time.perf_counter()
    if device.type == "cpu" and memory in ("low", "minimal"):
        return_large_blocks_on_free()  # before loading, so that the load's large blocks don't fragment the heap
    # int8 while streaming only without LoRA: adapters fuse into full-precision weights (quantized afterwards).
    layout = WeightLayout(int8=speed.quantize == "int8" and not loras, channels_last=speed.channels_last)
    vae_file = settings.vae if settings.vae and is_vae_file(settings.vae) else None
    vae_folder = settings.vae if settings.vae and not vae_file else None  # replaces the model's own VAE unread
    # The weights are read on another core while diffusers is imported (the first model of a process).
    prefetch = prefetch_weights(spec, dtype, layout, replaced_vae=vae_folder is not None)
    try:
        quiet_libraries()
        vae = load_vae(vae_folder, dtype) if vae_folder else None
        loaded = load(spec, dtype, safety_checker=safety_checker, layout=layout, vae=vae, prefetch=prefetch)
    finally:
        if prefetch is not None:
            prefetch.close()
    pipe = loaded.pipeline
    if vae_file:  # a single-file VAE (A1111's VAE folder) takes the model's VAE config
        pipe.vae = load_vae_file(vae_file, pipe.vae, dtype)
    if loras:
        apply_loras(pipe, loras)
    pipe.set_progress_bar_config(disable=True)
    # The checker runs after decoding so that flagged images are reported rather than blackened.
    checker, extractor = getattr(pipe, "safety_checker", None), getattr(pipe, "feature_extractor", None)
    if checker is not None:
        pipe.safety_checker = None
    if safety_checker and checker is None:
        log.warning("%s ships no safety checker; images will not be checked", reference)
    base_scheduler_config = dict(pipe.scheduler.config)
    apply_speed(pipe, speed, device)
    apply_memory_mode(pipe, memory, device)
    if checker is not None and memory == "balanced":
        checker.to(device)  # kept off the pipeline, so pipe.to() did not move it
    # Compiled UNet and VAE decoder where artifacts exist; after the memory mode, which may move the weights.
    compiled = attach_compiled(pipe, loaded.family, dtype, device, speed, settings, memory)
    release_freed_memory()  # conversion buffers of the load
    load_s = time.perf_counter() - started
    log.info("loaded %s (%s) on %s in %s in %.1f s", reference, loaded.family, device, dtype, load_s)
    extras = {"VAE": settings.vae and Path(settings.vae).name, "Lora": infotext_value(loras), **approximations(speed)}
    return ReadyModel(loaded, checker, extractor, base_scheduler_config, extras, load_s, compiled)


def approximations(speed: SpeedOptions) -> dict[str, Any]:
    """The engine options that change the picture, so that the infotext says how it was made (sdart's own keys:
    A1111 has none for these)."""
    return {
        "Step cache": speed.step_cache or None,
        "Token downsampling": speed.token_downsampling if speed.token_downsampling > 1 else None,
        "Weights": "int8" if speed.quantize == "int8" else None,
    }


def quiet_libraries() -> None:
    """diffusers and transformers log config notes users can't act on, and draw their own loading bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
