"""A prompt's `<lora:…>` tags looked up in the LoRA folder: what to apply, and what can't be and why.

Only the prompt's tags apply, as in A1111 (it reads extra networks from the prompt alone; a tag in the negative
prompt is left to the encoder as text and reported here). A name that is no file is an error for the CLI, Python and
the native API (`missing_lora="error"`); A1111's API draws without it and says so (`missing_lora="warn"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdart.conditioning.extra_networks import extract_extra_networks
from sdart.images.infotext import hashes_value
from sdart.models.lorafiles import LoraFolder, LoraNotFound
from sdart.models.loraswitch import AppliedLora


@dataclass
class PromptLoras:
    """The LoRAs a prompt's tags name, found in the folder, and what was not applied (one sentence each)."""

    loras: list[AppliedLora] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # names that are no file in the folder
    invalid: list[str] = field(default_factory=list)  # LoRA tags whose weights are no numbers, and why
    not_applied: list[str] = field(default_factory=list)  # tags sdart does not apply (other kinds), and why

    @property
    def warnings(self) -> list[str]:
        """What A1111 would note in its `comments` ("Failed to find networks: …"), then the rest."""
        missing = [f"Failed to find networks: {', '.join(self.missing)}"] if self.missing else []
        return missing + [f"{text}; not applied" for text in self.invalid] + self.not_applied

    def check(self, folder: LoraFolder) -> None:
        """The strict front ends' rule: LoraNotFound for a missing name, ValueError for a bad tag."""
        if self.missing:
            raise LoraNotFound(self.missing, folder.folder)
        if self.invalid:
            raise ValueError(self.invalid[0])

    def hashes(self) -> str | None:
        """The infotext's `Lora hashes` value (A1111: `name: shorthash, …`, the name as the tag wrote it)."""
        return hashes_value((lora.mentioned or lora.file.name, lora.file.short_hash) for lora in self.loras)


def find_prompt_loras(prompt: str, negative_prompt: str, folder: LoraFolder) -> PromptLoras:
    """Look up every tag of `prompt`; nothing raises (the caller decides what a missing name means)."""
    found = PromptLoras()
    _, networks = extract_extra_networks(prompt)
    for network in networks:
        if not network.is_lora:
            found.not_applied.append(f"{network.tag}: sdart applies no {network.kind!r} networks, only lora")
            continue
        try:
            weights = network.lora_weights()
        except ValueError as exc:
            found.invalid.append(str(exc))
            continue
        entry = folder.find(network.name)
        if entry is None:
            found.missing.append(network.name)
        else:
            found.loras.append(AppliedLora(entry, weights, network.name))
    _, negative = extract_extra_networks(negative_prompt)
    if negative:
        found.not_applied.append(f"{', '.join(n.tag for n in negative)} in the negative prompt: not applied (as in "
                                 "A1111, only the prompt's tags apply; the negative prompt keeps them as text)")
    return found
