"""The one generation request every front end builds: validated once, frozen.

Field names follow A1111's API (`cfg_scale`, `sampler_name`, `n_iter`, …) so that an A1111 payload, a CLI call,
a batch line and a Python call all mean the same thing. Invalid input raises `RequestError`, whose message names
each bad field and the value it was given.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sdart.sampling.samplers import (
    DEFAULT_SAMPLER,
    effective_schedule,
    find_sampler,
    find_schedule_type,
    parse_sampler_name,
)

MAX_SEED = 2**32 - 1  # A1111 and most UIs treat seeds as unsigned 32-bit integers.
MAX_SIDE = 4096
MAX_STEPS = 500
# Fields that name a picture (a file path or a data: URL): the server stores them itself and never shows paths.
PICTURE_FIELDS = ("init_image", "mask")
# A1111's `emphasis` option: "Original" weights (x:1.2) and restores each chunk's mean; "No norm" weights only;
# "Ignore" reads the brackets but applies no weights; "None" reads brackets and BREAK as literal text.
Emphasis = Literal["Original", "No norm", "Ignore", "None"]


class RequestError(ValueError):
    """Bad request fields. `errors` is a list of (field, value, message); str() is one line per field."""

    def __init__(self, errors: list[tuple[str, Any, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{name} = {_short(value)}: {message}" for name, value, message in errors))

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> RequestError:
        errors = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"]) or "request"
            message = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            # A check across fields starts its message with the field it is about ("mask: …"): name that field.
            field = message.partition(": ")[0]
            if name == "request" and field in GenerationRequest.model_fields:
                name = field
                value = value.get(field) if isinstance(value, dict) else getattr(value, field, value)
            errors.append((name, value, message))
        return cls(errors)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GenerationRequest(BaseModel):
    """What to generate. `width`/`height` of None mean "the model's native size"; seed -1 means random."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = Field(25, ge=1, le=MAX_STEPS)
    cfg_scale: float = Field(7.0, ge=0.0, le=100.0, allow_inf_nan=False, validation_alias=AliasChoices("cfg_scale", "guidance_scale", "cfg"))
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    width: int | None = Field(None, ge=8, le=MAX_SIDE)
    height: int | None = Field(None, ge=8, le=MAX_SIDE)
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=10_000, validation_alias=AliasChoices("n_iter", "batch_count"))
    sampler_name: str = Field(DEFAULT_SAMPLER, validation_alias=AliasChoices("sampler_name", "sampler"))
    scheduler: str = Field("Automatic", validation_alias=AliasChoices("scheduler", "schedule_type"))
    clip_skip: int = Field(1, ge=1, le=12)
    emphasis: Emphasis = "Original"  # how prompt weights apply (A1111's option of that name)
    model: str | None = None
    # A replacement VAE for this request: a name from the VAE folder (settings.vae_dir; A1111's `sd_vae`), a VAE
    # file, folder or hub id (the CLI), or "Automatic"/"None" for the model's own. None: the engine's configured VAE.
    vae: str | None = None
    # img2img: start from this picture (a file path, or a base64 data: URL) instead of noise. The server stores
    # uploaded pictures itself and queues the stored file's path.
    init_image: str | None = None
    denoising_strength: float = Field(0.75, gt=0.0, le=1.0, allow_inf_nan=False)  # 1: the picture is only a layout
    resize_mode: int = Field(0, ge=0, le=3)  # A1111's: 0 just resize, 1 crop and resize, 2 resize and fill
    # Inpainting: redraw only where this picture is white (A1111's convention; a path or data: URL like
    # init_image, which it needs), its edge softened by mask_blur pixels; inverted, only where it is black.
    mask: str | None = None
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_mask_invert: bool = False
    # What a `<lora:NAME>` tag naming no file in the LoRA folder does: "error" refuses the request (CLI, Python, the
    # native API); "warn" draws without it and says so (A1111's behaviour, which its /sdapi/v1 API keeps).
    missing_lora: Literal["error", "warn"] = "error"

    @model_validator(mode="before")
    @classmethod
    def _split_combined_sampler_name(cls, data: Any) -> Any:
        """"DPM++ 2M Karras" is sampler "DPM++ 2M" on schedule type "Karras", as A1111 ≥1.9 reads it."""
        if not isinstance(data, dict):
            return data
        name_key = next((key for key in ("sampler_name", "sampler") if key in data), None)
        if name_key is None or not isinstance(data[name_key], str):
            return data
        try:
            sampler, implied = parse_sampler_name(data[name_key])
        except ValueError:
            return data  # the field check names it
        if implied is None:
            return data
        schedule_key = next((key for key in ("scheduler", "schedule_type") if key in data), "scheduler")
        given = data.get(schedule_key)
        try:
            given_label = find_schedule_type(given) if isinstance(given, str) else None
        except ValueError:
            return data  # the field check names it
        if given_label not in (None, "Automatic", implied):
            raise ValueError(f"scheduler: sampler_name {data[name_key]!r} names schedule type {implied!r}, but "
                             f"scheduler is {given!r}; give the schedule type once")
        return {**data, name_key: sampler.name, schedule_key: implied}

    @field_validator(*PICTURE_FIELDS)
    @classmethod
    def _readable_image(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A stored request (a job's history) stays readable after its picture is gone; running it checks again.
        if value is not None and not (info.context or {}).get("stored"):
            from sdart.images.initimage import check_init_image

            check_init_image(value)
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"must be a multiple of 8 (the VAE works on 8×8 blocks); nearest: {round(value / 8) * 8 or 8}")
        return value

    @field_validator("sampler_name")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        return find_sampler(value).name

    @field_validator("scheduler")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        return find_schedule_type(value)

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _mask_needs_a_picture(self) -> GenerationRequest:
        if self.mask is not None and self.init_image is None:
            raise ValueError("mask: inpainting needs the picture to paint into (init_image)")
        return self

    @model_validator(mode="after")
    def _img2img_runs_a_step(self, info: ValidationInfo) -> GenerationRequest:
        # img2img runs steps × denoising_strength of the steps (A1111 and diffusers alike); none is no picture.
        # A stored request (a job's history) stays readable; running it checks again.
        stored = (info.context or {}).get("stored")
        if not stored and self.init_image is not None and int(self.steps * self.denoising_strength) < 1:
            raise ValueError(f"steps: {self.steps} step(s) at denoising_strength {self.denoising_strength:g} run no "
                             f"denoising step (img2img runs steps × strength); use at least "
                             f"{math.ceil(1 / self.denoising_strength)} steps")
        return self

    @model_validator(mode="after")
    def _schedule_fits_sampler(self) -> GenerationRequest:
        try:
            effective_schedule(find_sampler(self.sampler_name), self.scheduler)
        except ValueError as exc:
            raise ValueError(f"scheduler: {exc}") from None
        return self

    @classmethod
    def parse(cls, fields: dict[str, Any] | None = None, **more: Any) -> GenerationRequest:
        """Validate `fields` (and keyword fields), raising RequestError with one line per bad field."""
        try:
            return cls.model_validate({**(fields or {}), **more})
        except ValidationError as exc:
            raise RequestError.from_validation_error(exc) from None

    def replace(self, **changes: Any) -> GenerationRequest:
        """A validated copy with some fields changed."""
        return GenerationRequest.parse({**self.model_dump(), **changes})

    @property
    def images_total(self) -> int:
        return self.batch_size * self.n_iter
