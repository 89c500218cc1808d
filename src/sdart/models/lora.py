"""LoRA adapters fused into the loaded model's weights.

The use that matters most on a CPU: LCM-LoRA (`latent-consistency/lcm-lora-sdv1-5`, `…-sdxl`) turns an ordinary
SD 1.5 or SDXL model into one that draws in 4 steps with the LCM sampler at CFG 1–2.

A reference is `REF` or `REF:SCALE` (scale 1 when left out); REF is a local `.safetensors` file, a folder holding
`pytorch_lora_weights.safetensors`, or a hub id. Adapters are fused into the weights when the model loads
(diffusers + peft), so they cost nothing per step, and the adapter layers are then removed, which also lets the
fused QKV projections and int8 weights apply as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sdart.models.errors import first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraRef:
    reference: str
    scale: float = 1.0

    @property
    def name(self) -> str:
        """What the infotext shows: a file's stem, a folder's name, or the hub id."""
        path = Path(self.reference)
        return path.stem if path.suffix == ".safetensors" else (path.name if path.is_dir() else self.reference)

    def __str__(self) -> str:
        return f"{self.reference}:{self.scale:g}"


def parse_lora(text: str) -> LoraRef:
    """`REF` or `REF:SCALE` → LoraRef; ValueError names the value."""
    reference, _, scale = text.rpartition(":")
    if reference:
        try:
            return LoraRef(reference, float(scale))
        except ValueError:
            pass  # a colon that is not a scale separator: part of the reference
    if not text.strip():
        raise ValueError("lora = '': give a .safetensors file, a folder or a hub id, optionally with :SCALE")
    return LoraRef(text)


def apply_loras(pipe, loras: Sequence[LoraRef]) -> None:
    """Load each adapter, fuse them all at their scales into the UNet (and text encoder, where they carry
    layers for it), then drop the adapter layers."""
    names = []
    for i, lora in enumerate(loras):
        name = f"lora{i}"
        path = Path(lora.reference)
        try:
            if path.is_file():
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            else:
                pipe.load_lora_weights(lora.reference, adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"lora = {lora.reference!r}: could not be loaded ({first_line(exc)})") from exc
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
    pipe.fuse_lora(adapter_names=names)
    pipe.unload_lora_weights()  # the fused weights stay; the peft layers go
    log.info("fused LoRA %s", ", ".join(str(lora) for lora in loras))


def infotext_value(loras: Sequence[LoraRef]) -> str | None:
    return ", ".join(f"{lora.name}:{lora.scale:g}" for lora in loras) or None
