"""A LoRA file's low-rank pairs, matched to the layers of a loaded pipeline.

Two layouts are read (both `.safetensors`):
- kohya-ss / A1111: `lora_unet_<path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`; `lora_te_` (or
  `lora_te1_`) for the text encoder, `lora_te2_` for SDXL's second. The path is the diffusers module's name with
  dots as underscores, matched against the loaded model's own module names; SDXL files name the UNet's blocks as
  the original (SGM) UNet does (`input_blocks_4_1_…`), renumbered with diffusers' own mapping first.
- diffusers / peft: `unet.<path>.lora_A.weight` / `.lora_B.weight` (or `.lora.down.weight` / `.lora.up.weight`,
  `…to_q_lora.down.weight`), `text_encoder.…`, `text_encoder_2.…`; alpha from `<path>.alpha` keys or the
  `lora_adapter_metadata` diffusers writes (`unet.lora_alpha`, `unet.alpha_pattern`).
A layer's change is ΔW = up @ down × alpha / rank (1 without an alpha) × the tag's weight (A1111's `network_lora`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sdart.models.lorafiles import read_metadata

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2"}
# The original (SGM) UNet's names for layers inside blocks that diffusers names differently, after diffusers'
# block renumbering (`_maybe_map_sgm_blocks_to_diffusers`).
SGM_LAYER_NAMES = {"in_layers_2": "conv1", "out_layers_3": "conv2", "emb_layers_1": "time_emb_proj",
                   "skip_connection": "conv_shortcut", "downsamplers_0_op": "downsamplers_0_conv"}
SGM_BLOCKS = {"input_blocks_": "down_blocks_", "middle_block_": "mid_block_", "output_blocks_": "up_blocks_"}
SGM_TOP_LEVEL = {"input_blocks_0_0": "conv_in", "out_2": "conv_out",
                 "time_embed_0": "time_embedding_linear_1",
                 "time_embed_2": "time_embedding_linear_2",
                 "label_emb_0_0": "add_embedding_linear_1",
                 "label_emb_0_2": "add_embedding_linear_2"}
DOWN_SUFFIXES = (".lora_A.weight", ".lora.down.weight", ".lora_linear_layer.down.weight", ".lora_down.weight")
UP_SUFFIXES = (".lora_B.weight", ".lora.up.weight", ".lora_linear_layer.up.weight", ".lora_up.weight")
# diffusers' oldest layout names attention processors' LoRAs after the projection they change.
OLD_ATTN_NAMES = {"unet": {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"},
                  "text": {"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj",
                           "to_out_lora": "out_proj"}}


class LoraFormatError(ValueError):
    """A file that is no LoRA sdart can apply, or none that fits the loaded model; str() names the file."""


@dataclass(frozen=True)
class LowRank:
    """One layer's pair: down (r, in[, kh, kw]) and up (out, r[, 1, 1]), and the file's alpha for it."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None

    def factors(self, dyn: int | None = None, multiplier: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(up (out, r) × alpha / rank × multiplier, down (r, in·kh·kw)) in float32: ΔW = up @ down, flattened."""
        rank = self.down.shape[0]
        keep = min(dyn, rank) if dyn else rank  # DyLoRA: the first `dyn` ranks (the scale keeps the full rank)
        scale = (self.alpha / rank if self.alpha is not None else 1.0) * multiplier
        return self.up.flatten(1)[:, :keep].float() * scale, self.down.flatten(1)[:keep].float()


@dataclass(frozen=True)
class LoraLayers:
    """A file's pairs by (component, layer key) as written, before they are matched to a model."""

    path: Path
    kohya: bool
    pairs: dict[tuple[str, str], LowRank]


def read_lora(path: Path) -> LoraLayers:
    """The low-rank pairs of a LoRA file; LoraFormatError names the file and what is wrong with it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise LoraFormatError(f"LoRA {path}: not a readable .safetensors file ({exc})") from exc
    if any(key.startswith(tuple(KOHYA_PREFIXES)) for key in tensors):
        pairs = _kohya_pairs(path, tensors)
        return LoraLayers(path, True, pairs)
    return LoraLayers(path, False, _diffusers_pairs(path, tensors, read_metadata(path)))


def _unsupported(path: Path, keys) -> None:
    """LyCORIS variants (LoHa, LoKr, IA³, DoRA, CP-decomposed LoCon) need other maths: refused by name."""
    kinds = {"hada_": "LoHa", "lokr_": "LoKr", ".on_input": "IA³", "lora_mid": "LoCon with CP decomposition",
             "dora_scale": "DoRA", "lora_magnitude_vector": "DoRA", ".diff": "a full-weight difference"}
    for key in keys:
        for marker, name in kinds.items():
            if marker in key:
                raise LoraFormatError(f"LoRA {path}: a {name} network ({key}); only plain LoRA (LoCon) is applied")


def _kohya_pairs(path: Path, tensors: dict[str, torch.Tensor]) -> dict[tuple[str, str], LowRank]:
    _unsupported(path, tensors)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        base, _, part = key.partition(".")
        grouped.setdefault(base, {})[part] = tensor
    pairs = {}
    for base, parts in grouped.items():
        prefix = next((p for p in sorted(KOHYA_PREFIXES, key=len, reverse=True) if base.startswith(p)), None)
        if prefix is None or "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise LoraFormatError(f"LoRA {path}: {base} has no lora_down/lora_up pair ({', '.join(parts)})")
        alpha = parts.get("alpha")
        # Keyed by the layer's name without the prefix: `down_blocks_1_attentions_0_…_attn1_to_q`.
        pairs[(KOHYA_PREFIXES[prefix], base[len(prefix):])] = LowRank(
            parts["lora_down.weight"], parts["lora_up.weight"], None if alpha is None else float(alpha))
    return pairs


def _diffusers_pairs(path: Path, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str]) -> dict[tuple[str, str], LowRank]:
    _unsupported(path, tensors)
    downs, ups, alphas = {}, {}, {}
    for key, tensor in tensors.items():
        key = key.replace(".processor.", ".")
        component, _, rest = key.partition(".")
        if component not in COMPONENTS:
            component, rest = "unet", key  # the oldest files name UNet layers without a prefix
        for table, suffixes in ((downs, DOWN_SUFFIXES), (ups, UP_SUFFIXES), (alphas, (".alpha",))):
            suffix = next((s for s in suffixes if rest.endswith(s)), None)
            if suffix is not None:
                table[(component, _old_attn_name(component, rest[: -len(suffix)]))] = tensor
                break
        else:
            raise LoraFormatError(f"LoRA {path}: {key} is neither a LoRA down/up weight nor an alpha")
    if not downs:
        raise LoraFormatError(f"LoRA {path}: no LoRA layers in it")
    settings = _adapter_settings(metadata)
    pairs = {}
    for layer, down in downs.items():
        if layer not in ups:
            raise LoraFormatError(f"LoRA {path}: {layer[0]}.{layer[1]} has a down weight but no up weight")
        alpha = alphas.get(layer)
        pairs[layer] = LowRank(down, ups[layer], float(alpha) if alpha is not None else _alpha(settings, *layer))
    return pairs


def _old_attn_name(component: str, layer: str) -> str:
    head, _, last = layer.rpartition(".")
    names = OLD_ATTN_NAMES["unet" if component == "unet" else "text"]
    return f"{head}.{names[last]}" if last in names else layer


def _adapter_settings(metadata: dict[str, str]) -> dict:
    try:
        settings = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def _alpha(settings: dict, component: str, layer: str) -> float | None:
    """peft's alpha for a layer: its `alpha_pattern` entry (a regex on the module name's tail), else `lora_alpha`;
    None without either (ΔW unscaled, as diffusers loads such files)."""
    for pattern, alpha in (settings.get(f"{component}.alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", layer):
            return float(alpha)
    alpha = settings.get(f"{component}.lora_alpha")
    return float(alpha) if alpha is not None else None


# --- matching to a model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a layer's ΔW goes: a module's weight, or a block of rows of it (a fused QKV projection)."""

    module: nn.Module
    rows: slice | None = None

    @property
    def shape(self) -> torch.Size:
        """The shape ΔW must have: the weight's, or its block of rows."""
        weight = self.module.qweight if hasattr(self.module, "qweight") else self.module.weight
        if self.rows is None:
            return weight.shape
        return torch.Size((self.rows.stop - self.rows.start, *weight.shape[1:]))

    def fits(self, pair: LowRank) -> bool:
        """Whether the pair's ΔW (out, in…) has this target's size (a 1×1 conv and a Linear take each other's)."""
        shape = self.shape
        return pair.up.shape[0] == shape[0] and pair.down[0].numel() == shape[1:].numel()


def layer_targets(model: nn.Module) -> dict[str, Target]:
    """Every Linear/Conv2d-like layer of `model` by its module name, plus the q/k/v names that a fused projection
    (sdart.speed.options.fuse_qkv) took over: `…attn1.to_k` is rows d:2d of `…attn1.to_qkv`."""
    targets: dict[str, Target] = {}
    for name, module in model.named_modules():
        if hasattr(module, "weight") or hasattr(module, "qweight"):
            targets[name] = Target(module)
        if getattr(module, "fused_projections", False):
            fused = getattr(module, "to_kv", None) if module.is_cross_attention else getattr(module, "to_qkv", None)
            parts = ("to_k", "to_v") if module.is_cross_attention else ("to_q", "to_k", "to_v")
            if fused is None:
                continue
            size = fused.out_features // len(parts)  # diffusers concatenates the projections' rows in this order
            for i, part in enumerate(parts):
                targets.setdefault(f"{name}.{part}", Target(fused, slice(i * size, (i + 1) * size)))
    # transformers 5 flattened CLIPTextModel (no `text_model.`); LoRA files still name it.
    for name in [n for n in targets if not n.startswith("text_model.")]:
        targets.setdefault(f"text_model.{name}", targets[name])
    return targets


def sgm_to_diffusers(names: list[str], unet_config) -> dict[str, str]:
    """kohya SDXL UNet layer names in the SGM UNet's numbering (`input_blocks_4_1_…`) → diffusers' names (diffusers'
    own mapping for the block numbers, then the names of layers inside resnets and at the top level)."""
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    renamed, in_blocks = {}, {}
    for name in names:
        top = next((new + name[len(old):] for old, new in SGM_TOP_LEVEL.items()
                    if name == old or name.startswith(old + "_")), None)
        if top is not None:
            renamed[name] = top
        elif name.startswith(("input_blocks_", "middle_block_", "output_blocks_")):
            in_blocks[f"lora_unet_{name}.w"] = name  # the mapping splits keys as kohya's full ones
        else:
            renamed[name] = name
    for key, name in _maybe_map_sgm_blocks_to_diffusers(in_blocks, unet_config).items():
        new = key[len("lora_unet_"): -len(".w")]  # renumbered, still under the SGM block names
        for sgm, diffusers_name in SGM_BLOCKS.items():
            new = new.replace(sgm, diffusers_name, 1) if new.startswith(sgm) else new
        for sgm, diffusers_name in SGM_LAYER_NAMES.items():
            new = new.replace(f"_{sgm}", f"_{diffusers_name}")
        renamed[name] = new
    return renamed


def match_layers(lora: LoraLayers, pipe) -> tuple[list[tuple[str, Target, LowRank]], list[str]]:
    """(component, target, pair) for each pair that names a layer of `pipe` of its size, and the layers that name
    none (or one of another size: a LoRA for another model)."""
    matched, unmatched = [], []
    unet_names = [layer for component, layer in lora.pairs if component == "unet"]
    sgm = lora.kohya and any(n.startswith(("input_blocks_", "middle_block_", "output_blocks_")) for n in unet_names)
    renamed = sgm_to_diffusers(unet_names, pipe.unet.config) if sgm else {}
    for component in COMPONENTS:
        layers = [(layer, pair) for (c, layer), pair in lora.pairs.items() if c == component]
        if not layers:
            continue
        model = getattr(pipe, component, None)
        targets = layer_targets(model) if model is not None else {}
        if lora.kohya:  # kohya writes the module name with underscores for dots
            targets = {name.replace(".", "_"): target for name, target in targets.items()}
        for layer, pair in layers:
            target = targets.get(renamed.get(layer, layer))
            if target is None or not target.fits(pair):
                unmatched.append(f"{component}: {layer}")
            else:
                matched.append((component, target, pair))
    return matched, unmatched
