"""The A1111 infotext of one image: exactly what the run applied (request, model, and what the model was made
ready with)."""

from __future__ import annotations

from typing import Any

from sdart.images.infotext import format_infotext
from sdart.models.load import LoadedModel
from sdart.request import GenerationRequest
from sdart.sampling.samplers import effective_schedule, find_sampler
from sdart.version import __version__


def request_extras(request: GenerationRequest) -> dict[str, Any]:
    """Infotext keys a request adds beyond A1111's fixed ones, None where they don't apply."""
    return {
        "Denoising strength": request.denoising_strength if request.init_image else None,
        "Mask blur": request.mask_blur if request.mask else None,
    }


def infotext_for(request: GenerationRequest, seed: int, *, model: LoadedModel, model_extras: dict[str, Any],
                 prompt_extras: dict[str, Any] | None = None, run_extras: dict[str, Any] | None = None,
                 batch_pos: int = 0, batch_size: int = 1) -> str:
    """`prompt_extras`: what the conditioning applied (`TI hashes`, `Emphasis`: Conditioning.infotext_params);
    `run_extras`: what the run applied beyond the model (the prompt's LoRAs: `Lora hashes`)."""
    return format_infotext(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        sampler_name=request.sampler_name,
        # what Automatic resolved to (Karras for DPM++ 2M), as A1111 writes it; a timestep sampler's own grid is omitted
        scheduler=effective_schedule(find_sampler(request.sampler_name), request.scheduler),
        cfg_scale=request.cfg_scale,
        seed=seed,
        width=request.width,
        height=request.height,
        model_name=model.spec.name,
        model_hash=model.hash,
        clip_skip=request.clip_skip,
        extra={"VAE": model_extras.get("VAE"), "Lora": model_extras.get("Lora"), **(run_extras or {}),
               **request_extras(request), **(prompt_extras or {}),
               **{k: v for k, v in model_extras.items() if k not in ("VAE", "Lora")}},
        batch_size=batch_size,
        batch_pos=batch_pos,
        version=f"sdart {__version__}",
    )
