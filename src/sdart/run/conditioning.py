"""The prompt's conditioning in the denoising run: encoded once per run (sdart.conditioning), handed to the pipeline
as embeddings, and switched between model calls where prompt editing or alternation says so."""

from __future__ import annotations

from typing import Any

import torch

from sdart.conditioning import Conditioning, Embeddings, encode_prompt
from sdart.request import GenerationRequest
from sdart.sampling.samplers import find_sampler


def calls_per_step(sampler_name: str) -> int:
    """Model calls per step of the A1111 sampler: 2 for its `second_order` ones (Heun, DPM2, DPM++ SDE, …), over
    which A1111 lays the editing schedule (SamplerData.total_steps) and counts every call."""
    return 2 if find_sampler(sampler_name).a1111_options.get("second_order") else 1


def request_conditioning(pipe: Any, request: GenerationRequest, embeddings: Embeddings | None, *,
                         prompt: str | None = None, negative_prompt: str | None = None, steps: int | None = None,
                         sampler_name: str | None = None) -> Conditioning:
    """The request's prompts encoded for `pipe`, the editing schedule laid over A1111's step count; `prompt`: the
    positive prompt as the encoder should read it (without its `<lora:…>` tags), if not the request's. A later pass
    (hires fix) gives its own prompts, steps and sampler."""
    sampler_name = sampler_name or request.sampler_name
    return encode_prompt(pipe, request.prompt if prompt is None else prompt,
                         request.negative_prompt if negative_prompt is None else negative_prompt,
                         steps=(steps or request.steps) * calls_per_step(sampler_name), clip_skip=request.clip_skip,
                         emphasis=request.emphasis, embeddings=embeddings)


class StepConditioning:
    """Gives the pipeline its first step's embeddings, and after each model call the next one's when they change.

    diffusers' loop calls `callback_on_step_end` after every model call (its index i). Where the scheduler makes
    as many calls per step as A1111's sampler (its `order`: Heun, DPM2, DPM++ SDE twice) call i is A1111's call i;
    where it calls once for A1111's two (an alias such as Restart run as another sampler would), call i stands for
    A1111's call 2i.
    """

    # What the pipelines read back from the callback: the embeddings already joined as [negative, positive] for
    # classifier-free guidance (SD and SDXL `__call__`), and SDXL's pooled ones under `add_text_embeds`.
    TENSOR_INPUTS = ("prompt_embeds", "add_text_embeds")

    def __init__(self, conditioning: Conditioning, sampler_name: str, batch_size: int, calls_before: int = 0):
        self.conditioning = conditioning
        self.a1111_calls = calls_per_step(sampler_name)
        self.batch_size = batch_size
        self.calls_before = calls_before  # model calls of this schedule made before the pipeline's first (the refiner)

    def pipeline_kwargs(self, pipe: Any) -> dict[str, torch.Tensor]:
        return self.conditioning.at_step(self._a1111_step(pipe, 0), self.batch_size)

    def tensor_inputs(self, pipe: Any) -> list[str]:
        """The callback tensors to ask the pipeline for: the ones it has, so that dtype and device can be matched."""
        return [] if self.conditioning.is_static else [
            name for name in self.TENSOR_INPUTS if name in getattr(pipe, "_callback_tensor_inputs", ())]

    def _a1111_step(self, pipe: Any, call: int) -> int:
        """A1111's step (its model call) of the pipeline's model call `call`."""
        return (self.calls_before + call) * self.a1111_calls // int(getattr(pipe.scheduler, "order", 1))

    def next_step(self, pipe: Any, call: int, callback_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """After model call `call`: the callback outputs that set call + 1's embeddings, if they differ."""
        if self.conditioning.is_static:
            return {}
        now, after = self._a1111_step(pipe, call), self._a1111_step(pipe, call + 1)
        if self.conditioning.texts_at(now) == self.conditioning.texts_at(after):
            return {}
        kwargs = self.conditioning.at_step(after, self.batch_size)
        guided = bool(getattr(pipe, "do_classifier_free_guidance", False))
        updates = {"prompt_embeds": _joined(kwargs["negative_prompt_embeds"], kwargs["prompt_embeds"], guided)}
        if "pooled_prompt_embeds" in kwargs:
            updates["add_text_embeds"] = _joined(kwargs["negative_pooled_prompt_embeds"],
                                                 kwargs["pooled_prompt_embeds"], guided)
        return {name: tensor.to(callback_kwargs[name].device, callback_kwargs[name].dtype)
                if name in callback_kwargs else tensor for name, tensor in updates.items()}


def _joined(negative: torch.Tensor, positive: torch.Tensor, guided: bool) -> torch.Tensor:
    return torch.cat([negative, positive]) if guided else positive
