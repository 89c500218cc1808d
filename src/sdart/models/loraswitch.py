"""LoRA for one request: each affected weight is replaced by a patched copy (W + ΔW) for the run, and the
original tensor is put back afterwards, so the loaded weights are never written to and the next run without the
LoRA draws bit for bit what it drew before (A1111's default "merge with a backup", copy-on-write).

Why copies of the weights rather than peft adapters switched per request: sdart fuses the attention's Q/K/V
projections into one (speed.options.fuse_qkv) and may keep weights as int8 (speed.quant), and peft knows neither
(it would look for the `to_q` layers the fusing removed, and wrap only nn.Linear); unfused adapters also cost
every UNet call two extra matmuls per layer, where a patched weight costs nothing per step. A q/k/v pair goes into
its rows of the fused projection; an int8 layer is dequantized, patched and quantized again (as `--lora` at load).
Switching costs one copy and one addmm per affected weight, 0.05–0.35 of one UNet call for a rank-32 SD 1.5 LoRA,
against +20–75 % on every UNet call with peft adapters (benchmarks/NOTES.md).

What can't work: a torch.compile'd UNet on the CPU folds its weights into the compiled graph (Inductor freezing),
and weights streamed to the GPU layer by layer (`--memory minimal`) are copied back from the loader's own store at
every step; in both a swapped weight is never seen, so those are refused (`--lora REF:SCALE` fuses at load).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sdart.conditioning.extra_networks import LoraWeights
from sdart.models.lorafiles import LoraFile
from sdart.models.loraweights import LoraFormatError, LowRank, Target, match_layers, read_lora

log = logging.getLogger(__name__)

# LoRA files kept read and matched, the most recently used first, up to this many bytes of tensors (the last one
# is always kept): a typical SD 1.5 LoRA holds 10–150 MB, an SDXL one up to ~900 MB.
CACHE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA file at the weights a tag asked for; `mentioned` is the name the tag used (the infotext's)."""

    file: LoraFile
    weights: LoraWeights = field(default_factory=LoraWeights)
    mentioned: str = ""


def unsupported_reason(*, compiled: bool, memory: str, device: torch.device) -> str | None:
    """Why per-request LoRA can't work with these engine settings, or None."""
    if compiled:
        return ("the UNet is compiled (--compile): its weights are part of the compiled graph, so a LoRA tag "
                "would not change the picture; fuse the LoRA at load with --lora REF:SCALE, or drop --compile")
    if memory == "minimal" and device.type == "cuda":
        return ("--memory minimal streams the weights to the GPU from a copy of their own, so a LoRA tag would not "
                "change the picture; use --memory low, or fuse the LoRA at load with --lora REF:SCALE")
    return None


class LoraSwitch:
    """Applies a request's LoRAs to one pipeline's UNet and text encoders and takes them off again. Files are read
    and matched to the pipeline once and kept (up to CACHE_BYTES), so a LoRA used again costs no reading."""

    def __init__(self, pipe):
        self.pipe = pipe
        self._matched: OrderedDict[tuple[Path, int], list[tuple[str, Target, LowRank]]] = OrderedDict()
        self._matched_lock = threading.Lock()  # a server's request threads check files while a job runs
        self._originals: list[tuple[nn.Module, str, torch.Tensor]] = []

    @property
    def active(self) -> bool:
        return bool(self._originals)

    def layers(self, lora: LoraFile) -> list[tuple[str, Target, LowRank]]:
        """The file's pairs matched to this pipeline's layers (read once per file version); LoraFormatError if the
        file is no LoRA sdart can apply or fits no layer of the model."""
        try:
            key = (lora.path, lora.path.stat().st_mtime_ns)
        except OSError as exc:
            raise LoraFormatError(f"LoRA {lora.name!r}: {lora.path} can't be read ({exc.strerror})") from None
        with self._matched_lock:
            if key in self._matched:
                self._matched.move_to_end(key)
                return self._matched[key]
            matched = self._match(lora)
            self._matched[key] = matched
            while len(self._matched) > 1 and sum(map(_bytes, self._matched.values())) > CACHE_BYTES:
                self._matched.popitem(last=False)
            return matched

    def _match(self, lora: LoraFile) -> list[tuple[str, Target, LowRank]]:
        matched, unmatched = match_layers(read_lora(lora.path), self.pipe)
        if not matched:
            raise LoraFormatError(f"LoRA {lora.name!r} ({lora.path}) fits no layer of the loaded model "
                                  f"(a LoRA for another model family?); its layers: {', '.join(unmatched[:3])}, …")
        if unmatched:
            log.warning("LoRA %s: %d of its layers name no layer of the loaded model and are not applied: %s",
                        lora.name, len(unmatched), ", ".join(unmatched[:5]))
        return matched

    @contextmanager
    def applied(self, loras: Sequence[AppliedLora]) -> Iterator[None]:
        """The pipeline with `loras` applied inside the block, exactly as loaded outside it."""
        self.apply(loras)
        try:
            yield
        finally:
            self.restore()

    def apply(self, loras: Sequence[AppliedLora]) -> None:
        if self._originals:
            raise RuntimeError("LoRAs are applied already: restore() first")
        # 1. Every pair, grouped by the module it changes (a fused projection gathers q, k and v; two LoRAs add up).
        by_module: dict[int, tuple[nn.Module, list[tuple[slice | None, LowRank, float, int | None]]]] = {}
        for lora in loras:
            for component, target, pair in self.layers(lora.file):
                multiplier = lora.weights.unet if component == "unet" else lora.weights.te
                if multiplier:
                    entry = by_module.setdefault(id(target.module), (target.module, []))
                    entry[1].append((target.rows, pair, multiplier, lora.weights.dyn))
        # 2. One patched copy per module, built from its own pairs only (temporaries of one layer at a time).
        try:
            with torch.no_grad():
                for module, pairs in by_module.values():
                    self._patch(module, pairs)
        except BaseException:
            self.restore()
            raise

    def restore(self) -> None:
        """Put every original tensor back (the same objects: nothing was written to them)."""
        while self._originals:
            module, name, original = self._originals.pop()
            setattr(module, name, original)

    def _patch(self, module: nn.Module, pairs) -> None:
        if hasattr(module, "qweight"):  # int8: dequantize, patch in float32, quantize again
            from sdart.speed.quant import quantize_tensor

            patched = module.dequantized().float()
            _add_pairs(patched, pairs)
            qweight, scale = quantize_tensor(patched)
            self._swap(module, "qweight", qweight)
            self._swap(module, "scale", scale.to(module.scale.dtype))
            return
        # One copy of the weight (in its own dtype and memory layout), ΔW added in place with one addmm per pair.
        patched = module.weight.detach().clone()
        _add_pairs(patched, pairs)
        self._swap(module, "weight", nn.Parameter(patched, requires_grad=False))

    def _swap(self, module: nn.Module, name: str, tensor: torch.Tensor) -> None:
        self._originals.append((module, name, getattr(module, name)))
        setattr(module, name, tensor)


def _bytes(layers: list[tuple[str, Target, LowRank]]) -> int:
    return sum(t.element_size() * t.numel() for _, _, pair in layers for t in (pair.down, pair.up))


def _add_pairs(weight: torch.Tensor, pairs) -> None:
    """weight (or its rows) += up @ down for each pair, in place. The matmul accumulates in float32 and rounds to
    the weight's dtype once; a weight that is not one matrix in memory (a channels_last 3×3 conv) gets ΔW added
    as a tensor instead."""
    for rows, pair, multiplier, dyn in pairs:
        target = weight if rows is None else weight[rows]
        up, down = pair.factors(dyn, multiplier)
        up, down = up.to(weight.device, weight.dtype), down.to(weight.device, weight.dtype)
        try:
            matrix = target.view(target.shape[0], -1)
        except RuntimeError:  # strides that don't flatten
            target.add_((up @ down).reshape(target.shape))
        else:
            matrix.addmm_(up, down)
