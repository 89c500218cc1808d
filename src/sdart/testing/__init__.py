"""Offline test kit: tiny Stable-Diffusion-shaped pipelines built from configs, no download.

Every model here is a real diffusers/transformers class with real SD wiring (UNet with cross-attention,
4-block KL VAE so ``vae_scale_factor == 8``, CLIP text encoders, byte-level CLIP tokenizer), only with
tiny widths. Weights are random but deterministic from ``seed``, so two builds with the same seed are
bit-identical and a saved model reloads to bit-identical weights. Outputs of a folder reloaded with
``from_pretrained`` may still differ from the in-memory pipeline by ~1e-6: diffusers/transformers mmap
the safetensors, so weights sit at 8-byte- instead of 64-byte-aligned addresses and some CPU matmuls
(e.g. SDXL's 1-row pooled projection) round differently. ``from_single_file`` copies the weights and
reproduces the in-memory pixels exactly.

Native size is ``unet.config.sample_size * 8`` px; float32 size of the saved model in brackets:

=======  ===============================================  ===========  ======
kind     shaped like                                      native size  latent
=======  ===============================================  ===========  ======
sd15     SD 1.x: CLIP-L style encoder, PNDM, eps (7 MB)       64 px      8x8
sd2v     SD 2.x 768-v: OpenCLIP style, Euler, v (7.5 MB)      96 px     12x12
sdxl     SDXL base: 2 encoders, text_time, Euler (11 MB)     128 px     16x16
=======  ===============================================  ===========  ======

A 2-step generation at native size takes ~0.05 s on 2 CPU cores.

``save_single_file`` writes the original (LDM/CompVis) checkpoint layout that A1111/Civitai files use,
which diffusers reads back with::

    StableDiffusionPipeline.from_single_file(file, config=<diffusers folder>, local_files_only=True)

(``StableDiffusionXLPipeline`` for sdxl). ``config=`` must name a local folder with ``model_index.json``
and component configs (e.g. one made by ``save_tiny_model``); without it diffusers goes to the Hub.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "KINDS",
    "build_tiny_pipeline",
    "save_single_file",
    "save_tiny_model",
    "tiny_sd15_components",
    "tiny_sd2v_components",
    "tiny_sdxl_components",
    "tiny_sdxl_refiner_components",
    "to_ldm_state_dict",
    "write_byte_level_tokenizer",
]

KINDS = ("sd15", "sd2v", "sdxl")
REFINER = "sdxl-refiner"  # not a base model: a refiner, for build_tiny_pipeline / save_tiny_model

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# SD1 and SDXL's first tokenizer pad with EOS; OpenCLIP tokenizers (SD2, SDXL's second) pad with "!" (id 0).
OPENCLIP_PAD = "!"


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode symbol table (256 entries, printable ASCII first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}


def byte_level_vocab() -> list[str]:
    """The 514 tokens in id order: 256 byte symbols, the same with ``</w>``, then BOS (512) and EOS (513)."""
    symbols = list(bytes_to_unicode().values())
    return [*symbols, *(s + "</w>" for s in symbols), BOS, EOS]


def write_byte_level_tokenizer(directory: str | Path, *, pad_token: str = EOS) -> Path:
    """Write a ``CLIPTokenizer`` whose BPE has no merges: every UTF-8 byte is one token.

    Any text encodes (an emoji is 4 tokens), nothing is downloaded, and ids are < 514. ``model_max_length``
    must be written: without it transformers falls back to a huge default and SD prompts are not padded
    to 77. ``pad_token`` is ``"<|endoftext|>"`` for SD1 and ``"!"`` for OpenCLIP-style tokenizers.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = byte_level_vocab()
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return directory


def _tiny_tokenizer(pad_token: str = EOS) -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="sdart-tok-") as tmp:
        return CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(tmp, pad_token=pad_token))


# --------------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------------
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG inside the block only, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _text_encoder(seed: int, *, hidden: int, act: str, pad_token: str, layers: int = 4,
                  with_projection: bool = False, projection_dim: int = 32) -> Any:
    """Tiny CLIP text encoder. ``act``: "quick_gelu" = OpenAI CLIP (SD1, SDXL #1), "gelu" = OpenCLIP."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab = byte_level_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=37, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=act, projection_dim=projection_dim,
        bos_token_id=vocab.index(BOS), eos_token_id=vocab.index(EOS), pad_token_id=vocab.index(pad_token),
    )
    with _seeded(seed):
        model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    return model.eval()


def _vae(seed: int, *, scaling_factor: float, sample_size: int) -> Any:
    """4-block KL VAE like SD's (so 8x downsampling), 8..32 channels instead of 128..512."""
    from diffusers import AutoencoderKL

    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32), layers_per_block=2, norm_num_groups=8,
            sample_size=sample_size, scaling_factor=scaling_factor,
        ).eval()


def _unet(seed: int, *, sample_size: int, cross_attention_dim: int, **extra: Any) -> Any:
    """SD-wired UNet (2 levels, 2 resnets each, cross-attention at the lower level)."""
    from diffusers import UNet2DConditionModel

    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=cross_attention_dim, **extra,
        ).eval()


_SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}
_NO_EXTRAS: dict[str, Any] = {"safety_checker": None, "feature_extractor": None, "image_encoder": None}


def tiny_sd15_components(seed: int = 0, *, sample_size: int = 8) -> dict[str, Any]:
    """Components for ``StableDiffusionPipeline`` shaped like SD 1.5.

    ``sample_size`` is the UNet's latent size (diffusers' meaning); the native image is ``8 * sample_size``
    px (default 64). Each model is seeded with ``seed`` before it is built.
    """
    from diffusers import PNDMScheduler

    return {
        "unet": _unet(seed, sample_size=sample_size, cross_attention_dim=32, attention_head_dim=4),
        "vae": _vae(seed, scaling_factor=0.18215, sample_size=sample_size * 8),
        "text_encoder": _text_encoder(seed, hidden=32, act="quick_gelu", pad_token=EOS),
        "tokenizer": _tiny_tokenizer(EOS),
        "scheduler": PNDMScheduler(**_SD_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False),
        **_NO_EXTRAS,
    }


def tiny_sd2v_components(seed: int = 0, *, sample_size: int = 12) -> dict[str, Any]:
    """Components shaped like SD 2.x 768-v: OpenCLIP-style encoder (gelu, pad "!"), linear projections in
    the transformer blocks, per-level head counts, Euler with ``prediction_type="v_prediction"`` (as in
    ``stabilityai/stable-diffusion-2``). Native size ``8 * sample_size`` px (default 96, as 768 is 1.5x
    SD1's 512). Its single file is not recognised as "v2" by diffusers' key sniffing (that needs a
    1024-wide encoder), so loading it always needs ``config=``."""
    from diffusers import EulerDiscreteScheduler

    return {
        "unet": _unet(seed, sample_size=sample_size, cross_attention_dim=48, attention_head_dim=(2, 4),
                      use_linear_projection=True),
        "vae": _vae(seed, scaling_factor=0.18215, sample_size=sample_size * 8),
        "text_encoder": _text_encoder(seed, hidden=48, act="gelu", pad_token=OPENCLIP_PAD),
        "tokenizer": _tiny_tokenizer(OPENCLIP_PAD),
        "scheduler": EulerDiscreteScheduler(**_SD_SCHEDULE, prediction_type="v_prediction",
                                            timestep_spacing="leading"),
        **_NO_EXTRAS,
    }


def tiny_sdxl_components(seed: int = 0, *, sample_size: int = 16) -> dict[str, Any]:
    """Components for ``StableDiffusionXLPipeline`` shaped like SDXL base (after diffusers' own
    ``get_dummy_components``): CLIP-L-style encoder (32 wide) + OpenCLIP-bigG-style encoder with
    projection (64 wide, 10 layers, pooled 32), UNet cross-attention over their concatenation (96),
    ``addition_embed_type="text_time"`` with input ``6 * 8 + 32 = 80``. The two encoders differ in width
    like the real ones (768 vs 1280), which is also what lets the single-file loader tell them apart.
    Native size ``8 * sample_size`` px (default 128, as 1024 is 2x SD1's 512)."""
    from diffusers import EulerDiscreteScheduler

    time_embed_dim, pooled_dim = 8, 32
    return {
        "unet": _unet(
            seed, sample_size=sample_size, cross_attention_dim=32 + 64, attention_head_dim=(2, 4),
            use_linear_projection=True, transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
            projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
        ),
        "vae": _vae(seed, scaling_factor=0.13025, sample_size=sample_size * 8),
        "text_encoder": _text_encoder(seed, hidden=32, act="quick_gelu", pad_token=EOS),
        # 10 layers: diffusers' `infer_diffusers_model_type` spots SDXL files by `...resblocks.9...`.
        "text_encoder_2": _text_encoder(seed, hidden=64, act="gelu", pad_token=OPENCLIP_PAD, layers=10,
                                        with_projection=True, projection_dim=pooled_dim),
        "tokenizer": _tiny_tokenizer(EOS),
        "tokenizer_2": _tiny_tokenizer(OPENCLIP_PAD),
        "scheduler": EulerDiscreteScheduler(**_SD_SCHEDULE, timestep_spacing="leading"),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_sdxl_refiner_components(seed: int = 0, *, sample_size: int = 16) -> dict[str, Any]:
    """Components for ``StableDiffusionXLImg2ImgPipeline`` shaped like the SDXL refiner: only the OpenCLIP-style
    second encoder (so UNet cross-attention is its width, 64), and an added time embedding of 5 numbers
    (original size, crop, aesthetic score: ``requires_aesthetics_score=True``) instead of the base's 6."""
    base = tiny_sdxl_components(seed, sample_size=sample_size)
    time_embed_dim, pooled_dim = 8, 32
    unet = _unet(
        seed, sample_size=sample_size, cross_attention_dim=64, attention_head_dim=(2, 4),
        use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=5 * time_embed_dim + pooled_dim,
    )
    return {**base, "unet": unet, "text_encoder": None, "tokenizer": None}


def build_tiny_pipeline(kind: str = "sd15", seed: int = 0, **kw: Any) -> Any:
    """An in-memory tiny pipeline on CPU in float32; ``kw`` goes to the components builder. ``kind`` is one of
    KINDS, or REFINER for an SDXL refiner (an img2img pipeline)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    if kind == "sd15":
        return StableDiffusionPipeline(**tiny_sd15_components(seed, **kw), requires_safety_checker=False)
    if kind == "sd2v":
        return StableDiffusionPipeline(**tiny_sd2v_components(seed, **kw), requires_safety_checker=False)
    if kind == "sdxl":
        return StableDiffusionXLPipeline(**tiny_sdxl_components(seed, **kw))
    if kind == REFINER:
        return StableDiffusionXLImg2ImgPipeline(**tiny_sdxl_refiner_components(seed, **kw),
                                                requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    raise ValueError(f"`kind` must be one of {KINDS} or {REFINER!r}, got {kind!r}")


def save_tiny_model(directory: str | Path, kind: str = "sd15", seed: int = 0, **kw: Any) -> Path:
    """Save a tiny pipeline in diffusers layout (``model_index.json`` + one folder per component,
    ``*.safetensors`` weights); loadable with ``DiffusionPipeline.from_pretrained(directory)``."""
    directory = Path(directory)
    build_tiny_pipeline(kind, seed, **kw).save_pretrained(directory, safe_serialization=True)
    return directory




from sdart.testing.ldm import save_single_file, to_ldm_state_dict  # noqa: E402 - public API of the kit
