"""LoRA files for tests and benchmarks, made for a given model's layers: random low-rank pairs (seeded), saved in
kohya-ss/A1111 layout (`lora_unet_…`, `lora_te_…`, `.lora_down.weight`, `.lora_up.weight`, `.alpha`) or in
diffusers' (`unet.….lora.down.weight`, `text_encoder.….lora_A.weight`), no download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# The layers kohya's trainer gives a LoRA by default: attention, the transformer's in/out projections and MLP.
UNET_LAYERS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def lora_pairs(pipe: Any, *, rank: int = 4, seed: int = 0, strength: float = 1.0, text_encoder: bool = True,
               unet_layers: tuple[str, ...] = UNET_LAYERS) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """{(component, module name): (down (r, in[, k, k]), up (out, r[, 1, 1]))} for the matching layers of an unfused
    pipeline; `strength` scales the up weights (ΔW ≈ strength × W's scale)."""
    generator = torch.Generator().manual_seed(seed)
    pairs = {}
    components = [("unet", unet_layers)] + ([("text_encoder", TEXT_LAYERS)] if text_encoder else [])
    if text_encoder and getattr(pipe, "text_encoder_2", None) is not None:
        components.append(("text_encoder_2", TEXT_LAYERS))
    for component, layers in components:
        for name, module in getattr(pipe, component).named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)) or not name.endswith(layers):
                continue
            weight = module.weight
            fan_in = weight[0].numel()
            down_shape = (rank, *weight.shape[1:])
            up_shape = (weight.shape[0], rank) + ((1, 1) if weight.dim() == 4 else ())
            down = torch.randn(down_shape, generator=generator) / fan_in**0.5
            up = torch.randn(up_shape, generator=generator) * strength * float(weight.detach().float().std()) / rank**0.5
            pairs[(component, name)] = (down, up)
    return pairs


def save_lora(pipe: Any, path: str | Path, *, layout: str = "kohya", alpha: float | None = None,
              metadata: dict[str, str] | None = None, **kw: Any) -> Path:
    """Write a LoRA for `pipe`'s layers (lora_pairs) to `path` in `layout` "kohya", "diffusers" (the names diffusers'
    trainers write: `to_q.lora.down.weight`, `ff.net.2.lora_A.weight`) or "peft" (`lora_A`/`lora_B` throughout),
    both written by diffusers' own `save_lora_weights`; with `alpha`, kohya files get an `.alpha` per layer and diffusers files a
    `lora_alpha` in their adapter metadata. Returns the path."""
    from safetensors.torch import save_file

    pairs = lora_pairs(pipe, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout in ("diffusers", "peft"):
        return _save_diffusers(pipe, pairs, path, alpha, convert=layout == "diffusers")
    if layout != "kohya":
        raise ValueError(f"layout = {layout!r}: use kohya, diffusers or peft")
    tensors: dict[str, torch.Tensor] = {}
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
    for (component, name), (down, up) in pairs.items():
        key = prefixes[component] + _kohya_name(component, name)
        tensors |= {f"{key}.lora_down.weight": down.contiguous(), f"{key}.lora_up.weight": up.contiguous()}
        if alpha is not None:
            tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(path), metadata=metadata)
    return path


def _save_diffusers(pipe: Any, pairs, path: Path, alpha: float | None, convert: bool) -> Path:
    from diffusers.utils import convert_state_dict_to_diffusers

    layers: dict[str, dict[str, torch.Tensor]] = {}
    ranks: dict[str, int] = {}
    for (component, name), (down, up) in pairs.items():  # peft's names, converted as diffusers' trainers do
        layers.setdefault(component, {}).update({f"{name}.lora_A.weight": down.contiguous(),
                                                 f"{name}.lora_B.weight": up.contiguous()})
        ranks[component] = down.shape[0]
    kwargs: dict[str, Any] = {f"{c}_lora_layers": convert_state_dict_to_diffusers(d) if convert else d
                              for c, d in layers.items()}
    if alpha is not None:
        kwargs |= {f"{c}_lora_adapter_metadata": {"r": ranks[c], "lora_alpha": alpha,
                                                  "target_modules": sorted(n for comp, n in pairs if comp == c)}
                   for c in layers}
    type(pipe).save_lora_weights(path.parent, weight_name=path.name, **kwargs)
    return path


def _kohya_name(component: str, name: str) -> str:
    """kohya names text-encoder layers from CLIPTextModel's `text_model.` (which transformers 5 flattened)."""
    if component != "unet" and not name.startswith("text_model."):
        name = "text_model." + name
    return name.replace(".", "_")
