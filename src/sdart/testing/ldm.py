"""The original LDM/CompVis single-file layout of a tiny pipeline (what A1111 and Civitai files use): diffusers key names renamed back, for tests of single-file loading."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------------------------------
# Single file: diffusers -> original LDM key layout
# (inverse of diffusers' loaders/single_file_utils.py, generalised from
#  scripts/convert_diffusers_to_original_stable_diffusion.py, which hard-codes SD1's 4 levels)
# --------------------------------------------------------------------------------------------------
# A prefix table maps a diffusers key prefix to (LDM prefix, renames of the module path right after it).
PrefixTable = dict[str, tuple[str, Mapping[str, str]]]
_SAME: Mapping[str, str] = {}


_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_table(config: Mapping[str, Any]) -> PrefixTable:
    """LDM numbers UNet modules flatly: ``input_blocks.0`` is conv_in, then per level ``L`` blocks of
    (resnet ``.0``, attention ``.1``) and one downsampler; ``output_blocks`` per level ``L + 1`` blocks
    of (resnet ``.0``, attention ``.1``) with the upsampler after the last one (``.1`` or ``.2``)."""
    levels, per = len(config["block_out_channels"]), config["layers_per_block"]
    if not isinstance(per, int):
        raise ValueError(f"per-level `layers_per_block` is not supported, got {per!r}")
    t: PrefixTable = {
        "time_embedding.linear_1.": ("time_embed.0.", _SAME), "time_embedding.linear_2.": ("time_embed.2.", _SAME),
        "add_embedding.linear_1.": ("label_emb.0.0.", _SAME), "add_embedding.linear_2.": ("label_emb.0.2.", _SAME),
        "conv_in.": ("input_blocks.0.0.", _SAME), "conv_norm_out.": ("out.0.", _SAME), "conv_out.": ("out.2.", _SAME),
        "mid_block.resnets.0.": ("middle_block.0.", _UNET_RESNET),
        "mid_block.attentions.0.": ("middle_block.1.", _SAME),
        "mid_block.resnets.1.": ("middle_block.2.", _UNET_RESNET),
    }
    for i in range(levels):
        for j in range(per):
            n = 1 + i * (per + 1) + j
            t[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{n}.0.", _UNET_RESNET)
            t[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{n}.1.", _SAME)
        if i < levels - 1:
            t[f"down_blocks.{i}.downsamplers.0.conv."] = (f"input_blocks.{(i + 1) * (per + 1)}.0.op.", _SAME)
        for j in range(per + 1):
            n = i * (per + 1) + j
            t[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{n}.0.", _UNET_RESNET)
            t[f"up_blocks.{i}.attentions.{j}."] = (f"output_blocks.{n}.1.", _SAME)
        if i < levels - 1:
            has_attn = "CrossAttn" in config["up_block_types"][i]
            t[f"up_blocks.{i}.upsamplers.0."] = (f"output_blocks.{i * (per + 1) + per}.{2 if has_attn else 1}.", _SAME)
    return t


def _vae_table(config: Mapping[str, Any]) -> PrefixTable:
    """LDM VAE: ``down.{i}.block.{j}``, ``up.{i}`` numbered from the bottom (reverse of diffusers),
    ``mid.block_1/attn_1/block_2``, ``norm_out``."""
    levels, per = len(config["block_out_channels"]), config["layers_per_block"]
    t: PrefixTable = {p: (p, _SAME) for p in ("quant_conv.", "post_quant_conv.")}
    for part in ("encoder", "decoder"):
        t |= {
            f"{part}.conv_in.": (f"{part}.conv_in.", _SAME), f"{part}.conv_out.": (f"{part}.conv_out.", _SAME),
            f"{part}.conv_norm_out.": (f"{part}.norm_out.", _SAME),
            f"{part}.mid_block.resnets.0.": (f"{part}.mid.block_1.", _VAE_RESNET),
            f"{part}.mid_block.resnets.1.": (f"{part}.mid.block_2.", _VAE_RESNET),
            f"{part}.mid_block.attentions.0.": (f"{part}.mid.attn_1.", _VAE_ATTN),
        }
    for i in range(levels):
        for j in range(per):
            t[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", _VAE_RESNET)
        t[f"encoder.down_blocks.{i}.downsamplers.0."] = (f"encoder.down.{i}.downsample.", _SAME)
        for j in range(per + 1):
            t[f"decoder.up_blocks.{i}.resnets.{j}."] = (f"decoder.up.{levels - 1 - i}.block.{j}.", _VAE_RESNET)
        t[f"decoder.up_blocks.{i}.upsamplers.0."] = (f"decoder.up.{levels - 1 - i}.upsample.", _SAME)
    return t


def _rename(state: Mapping[str, torch.Tensor], table: PrefixTable, prefix: str) -> dict[str, torch.Tensor]:
    """Rename every key by its longest matching prefix in ``table``; an unmatched key is an error so a
    diffusers layout change fails here rather than as silently random weights after loading."""
    by_length = sorted(table, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        src = next((p for p in by_length if key.startswith(p)), None)
        if src is None:
            raise KeyError(f"no LDM name for diffusers weight {key!r}")
        dst, inner = table[src]
        rest = key[len(src):]
        old = next((o for o in inner if rest.startswith(o + ".")), None)
        out[prefix + dst + (inner[old] + rest[len(old):] if old else rest)] = value
    return out


def _vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    out = _rename(state, _vae_table(config), prefix)
    # The LDM mid attention uses 1x1 convs: q/k/v/proj_out weights (C, C) -> (C, C, 1, 1).
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            out[key] = value[:, :, None, None]
    return out


def _clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenAI CLIP (SD1, SDXL #1) is stored as the transformers model itself under ``prefix``. Since
    transformers 5.6 ``CLIPTextModel`` has no ``text_model.`` level; the file keeps it."""
    return {prefix + (k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
            for k, v in state.items()}


_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


_OPENCLIP_TOP = {"embeddings.token_embedding.weight": "token_embedding.weight",
                 "embeddings.position_embedding.weight": "positional_embedding",
                 "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def _open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP (SD2, SDXL #2) layout: ``transformer.resblocks.{i}`` with q/k/v fused into
    ``attn.in_proj_weight`` (3H, H), and ``text_projection`` stored as (H, P), the transpose of the
    diffusers ``Linear`` weight (P, H)."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _OPENCLIP_TOP:
            out[prefix + _OPENCLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T
        elif key.startswith("encoder.layers."):
            layer, _, rest = key.removeprefix("encoder.layers.").partition(".")
            block = f"{prefix}transformer.resblocks.{layer}."
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                kind = rest.rsplit(".", 1)[1]  # weight | bias
                qkv = [state[f"encoder.layers.{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                out[f"{block}attn.in_proj_{kind}"] = torch.cat(qkv)
            else:
                module, _, param = rest.rpartition(".")
                out[block + _OPENCLIP_LAYER[module] + "." + param] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder weight {key!r}")
    return out


def _text_encoder_to_ldm(model: Any, base: str) -> dict[str, torch.Tensor]:
    """Pick the layout the real checkpoints use for this encoder: OpenCLIP models use plain ``gelu``,
    OpenAI CLIP ``quick_gelu`` -- the same split as SD1 vs SD2 and SDXL's two encoders."""
    if model.config.hidden_act == "gelu":
        return _open_clip_to_ldm(model.state_dict(), base + "model.")
    return _clip_to_ldm(model.state_dict(), base + "transformer.")


def to_ldm_state_dict(pipeline: Any) -> dict[str, torch.Tensor]:
    """One flat state dict in the original layout for an SD1/SD2/SDXL diffusers pipeline.

    Prefixes: ``model.diffusion_model.`` (UNet), ``first_stage_model.`` (VAE), and the text encoder under
    ``cond_stage_model.`` (SD1/SD2) or ``conditioner.embedders.{0,1}.`` (SDXL).
    """
    state = _rename(pipeline.unet.state_dict(), _unet_table(pipeline.unet.config), "model.diffusion_model.")
    state |= _vae_to_ldm(pipeline.vae.state_dict(), pipeline.vae.config, "first_stage_model.")
    if getattr(pipeline, "text_encoder_2", None) is not None:
        state |= _text_encoder_to_ldm(pipeline.text_encoder, "conditioner.embedders.0.")
        state |= _text_encoder_to_ldm(pipeline.text_encoder_2, "conditioner.embedders.1.")
    else:
        state |= _text_encoder_to_ldm(pipeline.text_encoder, "cond_stage_model.")
    return state


def save_single_file(pipeline_or_folder: Any, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write the pipeline's UNet, VAE and text encoder(s) as ONE ``.safetensors`` in the original LDM
    layout, like the checkpoints users download (SD1, SD2 and SDXL base).

    ``pipeline_or_folder``: a diffusers pipeline, or a folder saved by ``save_tiny_model``.
    ``dtype``: cast floating weights (e.g. ``torch.float16``, as most published files are).
    Read it back offline with ``<PipelineClass>.from_single_file(path, config=<that folder>,
    local_files_only=True)``; tokenizer and scheduler come from the folder, not the file.
    """
    from safetensors.torch import save_file

    pipeline = pipeline_or_folder
    if isinstance(pipeline_or_folder, (str, Path)):
        from diffusers import DiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(pipeline_or_folder, local_files_only=True)
    state = to_ldm_state_dict(pipeline)
    # clone: safetensors refuses views sharing storage (the reshaped VAE weights, q/k/v slices).
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().clone().contiguous()
               for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path
