"""Extra-network tags in a prompt (`<lora:NAME:WEIGHT>`, `<hypernet:NAME>`, …), taken out of the text the encoder
sees, as A1111's `extra_networks.parse_prompt` does.

A tag is `<KIND:ARG:ARG…>`: KIND is a word, the arguments are split on `:`, and an argument `key=value` is a named
one. The first positional argument is the network's name. For LoRA (A1111's `extra_networks_lora`): the second
positional argument (or `te=`) is the text-encoder weight, 1.0 when left out; the third (or `unet=`) the UNet weight,
the text-encoder weight when left out; the fourth (or `dyn=`) the rank to keep of a DyLoRA network.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# A1111's pattern: a word, a colon, then anything up to the next `>`.
TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")  # A1111 reads `<lyco:…>` (the old LyCORIS extension's tag) as a LoRA too


@dataclass(frozen=True)
class LoraWeights:
    """How strongly a LoRA applies: to the text encoder(s), to the UNet, and the DyLoRA rank to keep (None: all)."""

    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None


@dataclass(frozen=True)
class ExtraNetwork:
    """One tag: its kind (`lora`), the network's name, and the arguments after the name as written."""

    kind: str
    name: str
    weights: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        return f"<{self.kind}:{':'.join((self.name, *self.weights))}>"

    @property
    def is_lora(self) -> bool:
        return self.kind in LORA_KINDS

    def lora_weights(self) -> LoraWeights:
        """The text-encoder and UNet weights and DyLoRA rank this tag asks for; ValueError names the tag."""
        positional = [arg for arg in self.weights if not _named(arg)]
        named = dict(arg.split("=", 1) for arg in self.weights if _named(arg))
        unknown = sorted(set(named) - {"te", "unet", "dyn"})
        if unknown:
            raise ValueError(f"{self.tag}: unknown argument {unknown[0]}= (use te=, unet= or dyn=)")
        if len(positional) > 3:
            raise ValueError(f"{self.tag}: at most three values after the name (te, unet, dyn)")
        te = _number(self, named.get("te", positional[0] if positional else "1"))
        unet = _number(self, named.get("unet", positional[1] if len(positional) > 1 else str(te)))
        dyn_text = named.get("dyn", positional[2] if len(positional) > 2 else None)
        dyn = None
        if dyn_text is not None:
            if not dyn_text.strip().isdigit() or int(dyn_text) < 1:
                raise ValueError(f"{self.tag}: dyn = {dyn_text!r} is not a rank (a whole number from 1)")
            dyn = int(dyn_text)
        return LoraWeights(te, unet, dyn)


def _named(arg: str) -> bool:
    return len(arg.split("=")) == 2  # A1111: `a=b` is named; `a=b=c` stays positional


def _number(network: ExtraNetwork, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{network.tag}: weight {text!r} is not a number")
    return value


def extract_extra_networks(text: str) -> tuple[str, list[ExtraNetwork]]:
    """(the text with every tag removed, the tags in order). Everything outside the tags stays byte for byte."""
    found: list[ExtraNetwork] = []

    def take(match: re.Match) -> str:
        args = match.group(2).split(":")
        at = next((i for i, arg in enumerate(args) if not _named(arg)), 0)  # the name: the first positional one
        found.append(ExtraNetwork(match.group(1), args[at], tuple(args[:at] + args[at + 1:])))
        return ""

    return TAG.sub(take, text), found
