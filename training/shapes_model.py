"""The shapes model's parts in Stable Diffusion 1.x layout: tokenizer files, configs, scheduler.

Sizes are constructor arguments (as in diffusers' ``get_dummy_components``), collected in ``ModelConfig``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdart.testing import bytes_to_unicode

from .shapes_data import IMAGE_SIZE, caption_vocabulary

MAX_LENGTH = 77  # as SD: the pipeline pads every prompt to tokenizer.model_max_length
# Stable Diffusion 1.x's noise schedule (v1-inference.yaml): every sampler the project offers reads it from the
# config. (DDPM's "linear" 1e-4..0.02 was tried: on a 16×16 latent it destroys the picture by t≈600, so ε-loss gives
# almost no signal at the steps where sampling decides colour and layout; the model stayed prompt-blind.)
# The image-mean leak through x_T (alpha_bar_T = 0.0047) is kept small by zero-mean latents (center_latents).
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@dataclass(frozen=True)
class ModelConfig:
    vae_channels: tuple[int, ...] = (16, 32, 32)   # 3 blocks → 2 downsamples → latent 16×16 for 64×64 pixels
    vae_layers: int = 1
    # GroupNorm with one channel per group is InstanceNorm: it wipes out a flat picture's colour (VAE) and the
    # per-channel mean of the predicted noise (UNet). Keep ≥4 channels per group, as SD does (128/32, 320/32).
    vae_groups: int = 4
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 96)
    unet_layers: int = 1
    # Attention heads per transformer block. diffusers' UNet2DConditionModel takes its `attention_head_dim`
    # argument as the number of heads (SD 1.5's "8" means 8 heads of 40/80/160 channels). An earlier recipe set
    # it to 32 meaning a head size, which gave 32 heads of 2 channels: half of every training step went to
    # attention, and each head could barely choose a token. 2 heads = 32–48 channels per head.
    unet_heads: int = 2
    unet_groups: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)


# ---------------------------------------------------------------- tokenizer

def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one lower-case word (same algorithm as CLIPTokenizer.bpe)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        a, b = parts[i], parts[i + 1]
        merged, j = [], 0
        while j < len(parts):
            if j < len(parts) - 1 and parts[j] == a and parts[j + 1] == b:
                merged.append(a + b)
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


def write_tokenizer(folder: Path, words: list[str] | None = None) -> CLIPTokenizer:
    """CLIP BPE tokenizer files: every caption word is one token; anything else falls back to bytes.

    Vocab = 256 byte symbols, the same with ``</w>``, the merge results, then <|startoftext|>, <|endoftext|>
    (last, as in CLIP, so ``argmax(input_ids)`` finds the end token).
    """
    words = caption_vocabulary() if words is None else words
    byte_syms = list(bytes_to_unicode().values())
    vocab: list[str] = byte_syms + [s + "</w>" for s in byte_syms]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    known = set(vocab)
    for w in words:
        # Add merges at the lowest priority until the word is one token; earlier words stay whole.
        while len(parts := _bpe(w, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in known:
                known.add(pair[0] + pair[1])
                vocab.append(pair[0] + pair[1])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "do_lower_case": True,
         "clean_up_tokenization_spaces": True, "errors": "replace", **special}, indent=2))
    tok = CLIPTokenizer.from_pretrained(str(folder))
    for w in words:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"caption word {w!r} is {len(ids)} tokens: {tok.convert_ids_to_tokens(ids)}"
    return tok


# ---------------------------------------------------------------- models

def make_vae(cfg: ModelConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, layers_per_block=cfg.vae_layers,
        latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_groups, sample_size=IMAGE_SIZE,
    )


def make_text_encoder(cfg: ModelConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu", projection_dim=cfg.text_hidden, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
    ))


def make_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    n = len(cfg.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // cfg.vae_scale, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=down, up_block_types=up, block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers, cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads, norm_num_groups=cfg.unet_groups,
    )


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, prediction_type="epsilon", clip_sample=False)


def pipeline_scheduler() -> PNDMScheduler:
    """What SD 1.x ships (PNDM, skip_prk_steps); every sampler the project offers builds from its config."""
    sched = PNDMScheduler(**SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    # As SD 1.x's scheduler_config.json: DDIM/DDPM built from this config would otherwise clip x0 to [-1, 1],
    # and our scaled latents are not in that range (DDIM measured 0 % colour accuracy without this).
    sched.register_to_config(clip_sample=False)
    return sched
