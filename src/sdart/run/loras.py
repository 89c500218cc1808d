"""A request's `<lora:NAME:WEIGHT>` tags for its run: looked up in the LoRA folder before the run, applied to the
weights around the pipeline calls (sdart.models.loraswitch), named in the infotext (`Lora hashes`)."""

from __future__ import annotations

import re

import torch

from sdart.conditioning.extra_networks import extract_extra_networks
from sdart.loading import ReadyModel
from sdart.models.lorafiles import LoraFolder
from sdart.models.loraswitch import unsupported_reason
from sdart.models.loratags import PromptLoras, find_prompt_loras
from sdart.models.loraweights import LoraFormatError
from sdart.request import GenerationRequest, RequestError


def lookup_request_loras(request: GenerationRequest, folder: LoraFolder) -> PromptLoras:
    """The LoRAs the prompt's tags name in `folder`; with `missing_lora="error"` a name that is no file or a bad
    weight is a RequestError naming `prompt` (a check that needs no model: the CLI runs it before loading one)."""
    found = find_prompt_loras(request.prompt, request.negative_prompt, folder)
    if request.missing_lora == "error":
        try:
            found.check(folder)
        except (LookupError, ValueError) as exc:
            raise RequestError([("prompt", request.prompt, str(exc))]) from None
    if hires_only := _hires_only_tags(request):
        # A1111 switches to the hires prompt's networks for the second pass; sdart keeps one set for the whole run.
        reason = f"LoRA tags only in hr_prompt ({', '.join(hires_only)}): the hires pass runs with the prompt's LoRAs"
        if request.missing_lora == "error":
            raise RequestError([("hr_prompt", request.hr_prompt, f"{reason}; put the tags in the prompt")])
        found.not_applied.append(f"{reason}; not applied")
    return found


def _hires_only_tags(request: GenerationRequest) -> list[str]:
    """The hires prompts' LoRA tags that the first pass's prompts lack (written as in the prompt)."""
    if not request.enable_hr or not (request.hr_prompt or request.hr_negative_prompt):
        return []
    first = {network.tag for text in (request.prompt, request.negative_prompt)
             for network in extract_extra_networks(text)[1] if network.is_lora}
    return [network.tag for text in (request.hr_prompt, request.hr_negative_prompt)
            for network in extract_extra_networks(text)[1] if network.is_lora and network.tag not in first]


def request_loras(request: GenerationRequest, folder: LoraFolder, ready: ReadyModel | None, *, memory: str,
                  device: torch.device) -> PromptLoras:
    """lookup_request_loras, and whether the files fit the model `ready` (each read and matched once, then kept) and
    these engine settings can apply them: a RequestError naming `prompt` if not, with `missing_lora="error"`;
    left out and said in `warnings` with "warn". Without `ready` (the request names a model not loaded yet), only
    the lookup."""
    found = lookup_request_loras(request, folder)
    if ready is None:
        return found
    strict = request.missing_lora == "error"
    reason = unsupported_reason(compiled=hasattr(ready.pipeline.unet, "_orig_mod"), memory=memory,
                                device=device) if found.loras else None
    if reason and strict:
        raise RequestError([("prompt", request.prompt, f"LoRA tags can't apply: {reason}")])
    if reason:
        names = ", ".join(lora.mentioned for lora in found.loras)
        found.not_applied.append(f"LoRA {names}: not applied, {reason}")
        found.loras = []
    fitting = []
    for lora in found.loras:
        try:
            ready.lora_switch.layers(lora.file)
        except LoraFormatError as exc:
            if strict:
                raise RequestError([("prompt", request.prompt, str(exc))]) from None
            found.not_applied.append(f"{exc}; not applied")
            continue
        fitting.append(lora)
    found.loras = fitting
    return found


def names_by_hash(prompt: str, lora_hashes: str | None, folder: LoraFolder) -> str:
    """The prompt with each `<lora:NAME…>` whose NAME is no file here, but whose short hash in an infotext's
    `Lora hashes` is, renamed to that file (A1111 does this when an infotext is pasted: a renamed file is found)."""
    hashes = {}
    for item in (lora_hashes or "").split(","):
        name, _, short = item.partition(":")
        if short.strip():
            hashes[name.strip()] = short.strip()

    def rename(match: re.Match) -> str:
        name = match.group(2)
        if folder.find(name) is not None or name not in hashes:
            return match.group(0)
        entry = folder.find_by_hash(hashes[name])
        return match.group(0) if entry is None else f"<{match.group(1)}:{entry.name}"

    return re.sub(r"<(lora|lyco):([^:>]+)", rename, prompt)


def infotext_extras(found: PromptLoras) -> dict[str, str | None]:
    """What the run adds to the infotext: A1111's `Lora hashes` (the prompt itself keeps its tags as typed)."""
    return {"Lora hashes": found.hashes()}
