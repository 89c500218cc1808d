"""The A1111 infotext of one image: exactly what the run applied (request, model, and what the model was made
ready with). Keys and when each is written follow A1111's processing.py (`create_infotext`, the txt2img hires
`init`), and Forge's for `Hires CFG Scale`."""

from __future__ import annotations

from typing import Any

from sdart.images.infotext import format_infotext
from sdart.models.load import LoadedModel
from sdart.request import GenerationRequest
from sdart.run.hires import hires_sampler
from sdart.sampling.samplers import effective_schedule, find_sampler
from sdart.version import __version__


def _number(value: float) -> str:
    return f"{value:g}"


def variation_extras(request: GenerationRequest, subseed: int) -> dict[str, Any]:
    resized = request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0
    return {
        "Variation seed": subseed if request.subseed_strength else None,
        "Variation seed strength": _number(request.subseed_strength) if request.subseed_strength else None,
        "Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resized else None,
    }


def hires_extras(request: GenerationRequest) -> dict[str, Any]:
    """A1111 writes the scale or the resize box, the steps when not the first pass's, the sampler, schedule type,
    prompts and (Forge) guidance where they differ from the first pass's."""
    if not request.enable_hr:
        return {}
    resized = request.hr_resize_x or request.hr_resize_y
    sampler, schedule = hires_sampler(request)
    first_schedule = effective_schedule(find_sampler(request.sampler_name), request.scheduler)
    hires_schedule = effective_schedule(find_sampler(sampler), schedule)
    return {
        "Hires upscale": None if resized else _number(request.hr_scale),
        "Hires resize": f"{request.hr_resize_x}x{request.hr_resize_y}" if resized else None,
        "Hires steps": request.hr_second_pass_steps or None,
        "Hires upscaler": request.hr_upscaler,
        "Hires sampler": sampler if sampler != request.sampler_name else None,
        "Hires schedule type": hires_schedule if hires_schedule != first_schedule else None,
        "Hires prompt": request.hr_prompt if request.hr_prompt not in ("", request.prompt) else None,
        "Hires negative prompt": (request.hr_negative_prompt
                                  if request.hr_negative_prompt not in ("", request.negative_prompt) else None),
        "Hires CFG Scale": (_number(request.hr_cfg)
                            if request.hr_cfg is not None and request.hr_cfg != request.cfg_scale else None),
    }


def refiner_title(refiner: LoadedModel) -> str:
    """A1111's `short_title` of a checkpoint: its name and short hash."""
    return f"{refiner.spec.name} [{refiner.hash}]" if refiner.hash else refiner.spec.name


def request_extras(request: GenerationRequest, subseed: int = -1, refiner: LoadedModel | None = None) -> dict[str, Any]:
    """Infotext keys a request adds beyond A1111's fixed ones, None where they don't apply. `refiner`: the refiner
    model when it ran."""
    return {
        **variation_extras(request, subseed),
        "Denoising strength": request.denoising_strength if request.init_image or request.enable_hr else None,
        "Mask blur": request.mask_blur if request.mask else None,
        **hires_extras(request),
        "Refiner": refiner_title(refiner) if refiner is not None else None,
        "Refiner switch at": _number(request.refiner_switch_at) if refiner is not None else None,
    }


def infotext_for(request: GenerationRequest, seed: int, *, model: LoadedModel, model_extras: dict[str, Any],
                 prompt_extras: dict[str, Any] | None = None, run_extras: dict[str, Any] | None = None,
                 batch_pos: int = 0, batch_size: int = 1, subseed: int = -1,
                 refiner: LoadedModel | None = None) -> str:
    """`prompt_extras`: what the conditioning applied (`TI hashes`, `Emphasis`: Conditioning.infotext_params);
    `run_extras`: what the run applied beyond the model (the prompt's LoRAs: `Lora hashes`); `subseed`, `refiner`:
    the variation seed and the refiner model as they ran."""
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
               **request_extras(request, subseed, refiner), **(prompt_extras or {}),
               **{k: v for k, v in model_extras.items() if k not in ("VAE", "Lora")}},
        batch_size=batch_size,
        batch_pos=batch_pos,
        version=f"sdart {__version__}",
    )
