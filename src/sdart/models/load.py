"""Model references → loaded diffusers pipelines (streamed, int8 on the way in where asked), hashed as A1111 does.

A reference is one of:
- `builtin:NAME`: a model bundled with sdart (`sdart/builtin/NAME`, a diffusers folder);
- a local diffusers folder (holding `model_index.json`);
- a local single-file checkpoint (`.safetensors`, `.ckpt`, `.pt`, `.bin`) in the original LDM layout;
- a Hugging Face hub id (`org/name`), downloaded once into the HF cache (token from `HF_TOKEN`, `.env`,
  or `hf auth login`; `HF_HUB_OFFLINE=1` uses the cache only).
The pipeline class (SD 1.x/2.x or SDXL, Turbo included) comes from the model itself: `model_index.json`
for folders and hub repos, the checkpoint's keys for single files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from sdart.models.errors import ModelLoadError, _chain, _is_offline, classify_error
from sdart.models.prefetch import WeightPrefetch
from sdart.models.resolve import _HUB_ID, ModelSpec

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    pipeline: Any
    family: str  # "sd1", "sd2", "sdxl"

    @property
    def native_size(self) -> int:
        """The side the model was trained at: UNet latent size × VAE scale (512 SD1.x, 768 SD2-v, 1024 SDXL)."""
        return int(self.pipeline.unet.config.sample_size) * int(self.pipeline.vae_scale_factor)

    @cached_property
    def hash(self) -> str | None:
        """A1111-style short model hash: first 10 hex digits of the weights file's SHA-256."""
        weights = _weights_file(self.spec)
        return file_sha256(weights)[:10] if weights else None


def _weights_file(spec: ModelSpec) -> Path | None:
    if spec.source == "single_file":
        return Path(spec.location)
    if spec.source == "hub":
        from huggingface_hub import try_to_load_from_cache

        for name in ("unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors"):
            cached = try_to_load_from_cache(spec.location, name)
            if isinstance(cached, str):
                return Path(cached)
        return None
    unet = Path(spec.location) / "unet"
    candidates = sorted(unet.glob("diffusion_pytorch_model*.safetensors")) or sorted(unet.glob("*.bin"))
    return candidates[0] if candidates else None


def _hash_cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sdart" / "hashes.json"


def file_sha256(path: Path, *, skip: int = 0) -> str:
    """SHA-256 of a file from byte `skip` on, cached by (path, size, mtime); hub blobs are named by their SHA-256
    already."""
    resolved = path.resolve()
    if not skip and re.fullmatch(r"[0-9a-f]{64}", resolved.name):
        return resolved.name
    stat = resolved.stat()
    key = f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}" + (f":from {skip}" if skip else "")
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(resolved, "rb") as f:
        f.seek(skip)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        pass  # the hash is still right, just not remembered
    return cache[key]


@dataclass(frozen=True)
class WeightLayout:
    """How weights are stored as they are loaded: with `int8`, the UNet's and VAE's Linear/Conv2d weights become
    int8 as they are streamed in (sdart.streaming) and the text encoders are quantized as soon as each is loaded,
    before the UNet; `channels_last` lays streamed conv weights out NHWC."""

    int8: bool = False
    channels_last: bool = False


def load(spec: ModelSpec, dtype: torch.dtype, *, safety_checker: bool = False,
         layout: WeightLayout = WeightLayout(), vae=None, prefetch: WeightPrefetch | None = None) -> LoadedModel:
    """Load the pipeline on the CPU in `dtype`; the caller moves it to its device.

    Where the UNet's and VAE's weights are single local safetensors files they are streamed in as `layout` says.
    `vae`: a replacement VAE (load_vae); the model's own is then not loaded at all. `prefetch`: those files read
    ahead (prefetch_weights).
    """
    try:
        if spec.source == "single_file":
            pipeline = _load_single_file(spec, dtype, vae=vae)
        else:
            pipeline = _load_pretrained(spec, dtype, safety_checker=safety_checker, layout=layout, vae=vae,
                                        prefetch=prefetch)
    except ModelLoadError:
        raise
    except Exception as exc:  # every loader failure is classified; the original stays on __cause__
        raise classify_error(exc, spec) from exc
    _alias_clip_text_model(pipeline)
    return LoadedModel(spec, pipeline, _family(pipeline))


def load_vae(reference: str, dtype: torch.dtype):
    """A replacement VAE (A1111's "SD VAE"): a hub id or local folder holding an `AutoencoderKL` (for example
    `stabilityai/sd-vae-ft-mse`) or an `AutoencoderTiny` (`madebyollin/taesd`: decodes 512² in a fraction of the
    full VAE's time, a little softer). The class comes from the folder's config.json."""
    from diffusers import AutoModel

    try:
        return AutoModel.from_pretrained(reference, dtype=dtype)
    except Exception as exc:  # diffusers raises OSError/ValueError/EnvironmentError variants; all mean "not a VAE here"
        cause = classify_error(exc, ModelSpec(reference, "hub" if _HUB_ID.match(reference) else "folder", reference))
        raise ModelLoadError(cause.kind, f"vae = {reference!r}: {cause}") from exc


def _alias_clip_text_model(pipeline) -> None:
    """transformers 5 flattened CLIPTextModel (no `.text_model`), but diffusers 0.42's SD 1.x/2.x clip-skip path
    still calls `text_encoder.text_model.final_layer_norm`. Give it that name without registering a submodule
    (a plain instance attribute stays out of state_dict and module traversal)."""
    encoder = getattr(pipeline, "text_encoder", None)
    if encoder is not None and not hasattr(encoder, "text_model") and hasattr(encoder, "final_layer_norm"):
        from types import SimpleNamespace

        object.__setattr__(encoder, "text_model", SimpleNamespace(final_layer_norm=encoder.final_layer_norm))


def _family(pipeline) -> str:
    """SDXL by its pipeline class; SD 2.x by its OpenCLIP text encoder (plain gelu), SD 1.x uses OpenAI CLIP
    (quick_gelu)."""
    if "XL" in type(pipeline).__name__:
        return "sdxl"
    return "sd2" if pipeline.text_encoder.config.hidden_act == "gelu" else "sd1"


def _load_pretrained(spec: ModelSpec, dtype: torch.dtype, *, safety_checker: bool, layout: WeightLayout, vae=None,
                     prefetch: WeightPrefetch | None = None):
    kwargs: dict[str, Any] = {"dtype": dtype}
    if vae is not None:
        kwargs["vae"] = vae
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if _tries_fp16_first(spec, dtype):
        try:
            return _from_pretrained(spec, "fp16", layout, kwargs, prefetch)
        except (OSError, ValueError) as exc:
            if "variant" not in str(exc) and not _is_missing_entry(exc):
                raise
            log.info("no fp16 weights variant for %s; loading the default weights", spec.reference)
    return _from_pretrained(spec, None, layout, kwargs, prefetch)


def _from_pretrained(spec: ModelSpec, variant: str | None, layout: WeightLayout, kwargs: dict[str, Any],
                     prefetch: WeightPrefetch | None):
    """diffusers' loader for the pipeline, with the UNet and VAE (most of the weights) streamed in by
    sdart.streaming where each is one local safetensors file."""
    from diffusers import AutoencoderKL, AutoPipelineForText2Image, UNet2DConditionModel

    if variant:
        kwargs = {**kwargs, "variant": variant}
    if layout.int8:
        kwargs.update(_int8_text_encoders(spec, variant, kwargs["dtype"]))
    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        if name in kwargs:  # given by the caller
            continue
        model = _stream_component(spec, name, cls, variant, kwargs["dtype"], int8=layout.int8,
                                  channels_last=layout.channels_last, prefetch=prefetch)
        if model is not None:
            kwargs[name] = model
    return AutoPipelineForText2Image.from_pretrained(spec.location, **kwargs)


def _int8_text_encoders(spec: ModelSpec, variant: str | None, dtype: torch.dtype) -> dict[str, Any]:
    """The pipeline's transformers text encoders, loaded and int8-quantized one by one before anything else.

    Loading one holds its file's pages and its converted weights at once (0.46 GiB for SD 1.5's); done first,
    that transient comes while the process is small instead of on top of the int8 UNet.
    """
    import transformers
    from diffusers import DiffusionPipeline

    from sdart.speed.quant import quantize_int8

    index = DiffusionPipeline.load_config(spec.location)
    encoders = {}
    for name in ("text_encoder", "text_encoder_2"):
        library, class_name = (index.get(name) or [None, None])[:2]
        if library != "transformers" or not hasattr(transformers, class_name or ""):
            continue
        encoder = getattr(transformers, class_name).from_pretrained(spec.location, subfolder=name, variant=variant,
                                                                    dtype=dtype)
        quantize_int8(encoder)
        encoders[name] = encoder
    return encoders


def _stream_component(spec: ModelSpec, name: str, cls, variant: str | None, dtype: torch.dtype, *, int8: bool,
                      channels_last: bool, prefetch: WeightPrefetch | None):
    from sdart.models.streaming import StreamLoadError, load_model

    weights = _component_file(spec, name, variant)
    if weights is None or not weights.is_file():
        return None
    tensors = prefetch.tensors(weights) if prefetch is not None else None
    try:
        return load_model(cls, weights.parent, weights, dtype, int8=int8, channels_last=channels_last, tensors=tensors)
    except StreamLoadError as exc:
        log.info("streaming the %s of %s failed (%s); diffusers loads it", name, spec.reference, exc)
        return None


def _component_file(spec: ModelSpec, name: str, variant: str | None) -> Path | None:
    """Where component `name`'s one safetensors file is (None for a hub model not in the local cache: downloading
    stays with diffusers)."""
    filename = f"{name}/diffusion_pytorch_model{'.' + variant if variant else ''}.safetensors"
    if spec.source != "hub":
        return Path(spec.location) / filename
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.location, filename)
    return Path(cached) if isinstance(cached, str) else None


def prefetch_weights(spec: ModelSpec, dtype: torch.dtype, layout: WeightLayout, *,
                     replaced_vae: bool = False) -> WeightPrefetch | None:
    """Start reading the UNet and VAE files that load() will stream first, before diffusers is even imported
    (sdart.models.prefetch). Not with int8 weights: those are quantized tensor by tensor as they arrive, and a
    read-ahead would hold them in full precision. The caller closes it once the model is loaded."""
    if layout.int8 or spec.source == "single_file":
        return None
    variant = "fp16" if _tries_fp16_first(spec, dtype) else None
    names = ("unet",) if replaced_vae else ("unet", "vae")
    files = [path for name in names if (path := _component_file(spec, name, variant)) is not None and path.is_file()]
    return WeightPrefetch(files, dtype, layout.channels_last) if files else None


def _tries_fp16_first(spec: ModelSpec, dtype: torch.dtype) -> bool:
    """Whether the fp16 weights variant is tried first (the half of the bytes of SD's hub repos)."""
    return dtype != torch.float32 and _may_have_fp16_variant(spec)


def _may_have_fp16_variant(spec: ModelSpec) -> bool:
    if spec.source == "hub":
        return True
    return any(Path(spec.location).glob("*/*.fp16.safetensors"))


def _is_missing_entry(exc: BaseException) -> bool:
    from huggingface_hub.errors import EntryNotFoundError

    return any(isinstance(e, EntryNotFoundError) and not _is_offline(e) for e in _chain(exc))


def _load_single_file(spec: ModelSpec, dtype: torch.dtype, vae=None):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    is_xl = _single_file_is_sdxl(Path(spec.location))
    cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"dtype": dtype}
    if vae is not None:
        kwargs["vae"] = vae
    if spec.config_dir is not None:
        kwargs.update(config=str(spec.config_dir), local_files_only=True)
    if not is_xl:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return cls.from_single_file(spec.location, **kwargs)


def _single_file_is_sdxl(path: Path) -> bool:
    """SDXL checkpoints carry two text encoders under `conditioner.embedders.*`."""
    if path.suffix.lower() != ".safetensors":
        return False  # .ckpt files are read by diffusers itself; SDXL ships as safetensors
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(key.startswith("conditioner.embedders.1.") for key in f.keys())


# ---------------------------------------------------------------------------------------------------------
# Error classification: diffusers wraps hub errors in plain OSError/ValueError; the cause is down the chain.


