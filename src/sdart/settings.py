"""Configuration: CLI flags > environment (`SDART_*`) > `.env` in the working directory > defaults.

Loaded once by a front end and passed down; nothing here runs at import. `load_settings` also exports the
`.env` file into the process environment *before* anything imports huggingface_hub, because the hub reads
`HF_TOKEN`, `HF_HOME` and `HF_HUB_OFFLINE` when it is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from dotenv import load_dotenv
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"

Device = Literal["auto", "cpu", "cuda", "mps"] | str  # "cuda:1" etc. are accepted too
DType = Literal["auto", "float32", "float16", "bfloat16"]
MemoryMode = Literal["balanced", "low", "minimal"]
CompileMode = Literal["never", "auto", "always"]
COMPILE_MODES = ("never", "auto", "always")
# SDART_COMPILE=1 / compile=True (the switch before the three modes) still mean "always".
_COMPILE_SWITCH = {"1": "always", "true": "always", "yes": "always", "on": "always",
                   "0": "never", "false": "never", "no": "never", "off": "never"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDART_", env_file=".env", extra="ignore", protected_namespaces=())

    model: str = DEFAULT_MODEL
    # Local diffusers folder holding the configs a single-file checkpoint needs when the hub is unreachable.
    model_config_dir: Path | None = None
    device: str = "auto"
    dtype: DType = "auto"
    memory: MemoryMode = "balanced"
    rng: Literal["cpu", "device"] = "cpu"
    safety_checker: bool = False
    output_dir: Path = Path("outputs")

    # Speed options (see sdart.device.SpeedOptions).
    channels_last: bool = True
    fuse_qkv: bool = True
    # never: eager; auto: compiled where an artifact exists (the CLI), built in the background (server, batch);
    # always: missing artifacts are built before the run (sdart.speed.compile).
    compile: CompileMode = "auto"
    cache_dir: Path | None = None  # compiled artifacts and their build logs [default: the user cache, ~/.cache/sdart]
    compile_cache_dir: Path | None = None  # Inductor's kernel cache used by builds [default: cache_dir/inductor]
    threads: int | None = None
    step_cache: int = Field(0, ge=0)  # 0 off; N ≥ 2: full UNet every N steps, shallow branch between (changes the image)
    # 1 off; N ≥ 2: top-level self-attention attends to an N×N-pooled copy of its tokens (changes the image)
    token_downsampling: int = Field(1, ge=1, le=4)
    quantize: Literal["none", "int8"] = "none"  # int8 weights: less memory, slightly different image
    # A replacement VAE (hub id or folder): a fine-tuned AutoencoderKL, or AutoencoderTiny (TAESD) for fast decodes.
    vae: str | None = None
    # A1111's VAE folder: replacement VAEs (single files like vae-ft-mse-840000-ema-pruned.safetensors, or diffusers
    # folders) chosen by file name: the `sd_vae` option and override, /sdapi/v1/sd-vae, an infotext's `VAE`.
    vae_dir: Path | None = None
    # LoRA adapters fused into the model at load, each "REF" or "REF:SCALE" (sdart.lora), e.g. LCM-LoRA.
    loras: list[str] = Field(default_factory=list)
    # A1111's `models/Lora`: the .safetensors files (subfolders too) that `<lora:NAME:WEIGHT>` prompt tags name.
    lora_dir: Path | None = None
    # Upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, …) found by name here, A1111's models/ESRGAN-style
    # (subfolders allowed); run in tiles of upscaler_tile px overlapping by upscaler_overlap (sdart.upscalers).
    upscaler_dir: Path | None = None
    upscaler_tile: int = Field(512, ge=0)  # 0: the whole picture at once
    upscaler_overlap: int = Field(32, ge=0)

    @field_validator("upscaler_dir", "lora_dir")
    @classmethod
    def _check_upscaler_dir(cls, folder: Path | None) -> Path | None:
        if folder is not None and not folder.expanduser().is_dir():
            raise ValueError(f"{str(folder)!r}: no such folder")
        return folder

    @model_validator(mode="after")
    def _check_upscaler_tiles(self) -> Settings:
        from sdart.upscalers.tiles import check_tiling

        try:
            check_tiling(self.upscaler_tile, self.upscaler_overlap)
        except ValueError as exc:
            raise ValueError(f"upscaler_{exc}") from None
        return self
    # Textual-inversion embeddings (.pt, .bin, .safetensors): a prompt word equal to a file's name uses its vectors.
    embeddings_dir: Path | None = None

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "always" if value else "never"
        if isinstance(value, str) and value.strip().lower() in _COMPILE_SWITCH:
            return _COMPILE_SWITCH[value.strip().lower()]
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("loras")
    @classmethod
    def _check_loras(cls, loras: list[str]) -> list[str]:
        from sdart.models.lora import parse_lora

        for text in loras:
            parse_lora(text)
        return loras

    @field_validator("embeddings_dir")
    @classmethod
    def _embeddings_folder(cls, directory: Path | None) -> Path | None:
        if directory is not None and not directory.is_dir():
            raise ValueError(f"{str(directory)!r} is not a folder (give the folder of .pt, .bin and .safetensors "
                             "embedding files)")
        return directory

    # Server.
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    data_dir: Path = Path("sdart-data")
    api_key: str | None = None
    # Limits on what one request may ask for (the request model's own bounds are the hard ceiling).
    max_side: int = Field(2048, ge=8)  # width and height, pixels
    max_steps: int = Field(150, ge=1)
    max_images: int = Field(16, ge=1)  # batch_size × n_iter of one job
    max_prompt_chars: int = Field(4000, ge=1)  # prompt and negative prompt, each
    max_queue: int = Field(200, ge=1)  # queued jobs; beyond this, submissions get 429 + Retry-After
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # png-info uploads carry a base64 image
    cors_origins: list[str] = Field(default_factory=list)  # empty: no CORS headers at all
    # A1111's prompt styles (name,prompt,negative_prompt; `{prompt}` marks where the prompt goes), applied by a
    # request's `styles`; default: DATA_DIR/styles.csv.
    styles_file: Path | None = None
    # More models (references) the server offers by name, besides `model` and the built-in ones.
    extra_models: list[str] = Field(default_factory=list)


def load_settings(**overrides: Any) -> Settings:
    """Settings from `.env` and the environment, with explicit (non-None) overrides on top."""
    load_dotenv(Path.cwd() / ".env", override=False)
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
