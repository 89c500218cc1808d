"""The one generation request every front end builds: validated once, frozen.

Field names follow A1111's API (`cfg_scale`, `sampler_name`, `n_iter`, …) so that an A1111 payload, a CLI call,
a batch line and a Python call all mean the same thing. Invalid input raises `RequestError`, whose message names
each bad field and the value it was given.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from sdart.run.hires_size import HiresSize, hires_size
from sdart.sampling.samplers import (
    DEFAULT_SAMPLER,
    effective_schedule,
    find_sampler,
    find_schedule_type,
    parse_sampler_name,
)
from sdart.upscalers.names import find_upscaler

MAX_SEED = 2**63 - 1  # A1111 and Civitai write seeds past 2**32; torch generators and SQLite take 64-bit ones.
MAX_RANDOM_SEED = 2**32 - 1  # a random seed is drawn below 2**32, as A1111 draws them
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


def _split_combined(data: dict[str, Any], name_keys: tuple[str, ...], schedule_keys: tuple[str, ...]) -> dict:
    """`data` with a combined sampler name under one of `name_keys` split into the sampler and, under the first
    of `schedule_keys` present (else the first), the schedule type its suffix names."""
    name_key = next((key for key in name_keys if key in data), None)
    if name_key is None or not isinstance(data[name_key], str):
        return data
    try:
        sampler, implied = parse_sampler_name(data[name_key])
    except ValueError:
        return data  # the field check names it
    if implied is None:
        return data
    schedule_key = next((key for key in schedule_keys if key in data), schedule_keys[0])
    given = data.get(schedule_key)
    try:
        given_label = find_schedule_type(given) if isinstance(given, str) and given != "Use same scheduler" else None
    except ValueError:
        return data  # the field check names it
    if given_label not in (None, "Automatic", implied):
        raise ValueError(f"{schedule_keys[0]}: {name_keys[0]} {data[name_key]!r} names schedule type {implied!r}, "
                         f"but {schedule_keys[0]} is {given!r}; give the schedule type once")
    return {**data, name_key: sampler.name, schedule_key: implied}


_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")


def checkpoint_name(title: str) -> str:
    """A1111 names a checkpoint by its title, "name [hash]" (infotext, API clients, its short or full hash): the
    name finds it."""
    return _TITLE_HASH.sub("", title.strip())


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
    # How much of the picture img2img or the hires pass redraws (1: the picture is only a layout); None: 0.75 for
    # img2img, 0.7 for hires (A1111's defaults), filled in by Engine.resolve_request.
    denoising_strength: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    resize_mode: int = Field(0, ge=0, le=3)  # A1111's: 0 just resize, 1 crop and resize, 2 resize and fill
    # Inpainting: redraw only where this picture is white (A1111's convention; a path or data: URL like
    # init_image, which it needs), its edge softened by mask_blur pixels; inverted, only where it is black.
    mask: str | None = None
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_mask_invert: bool = False
    # Variation seeds (A1111): the noise of `seed` blended towards that of `subseed` by `subseed_strength`
    # (spherical interpolation); image i of a run keeps the seed and takes subseed + i. seed_resize_from_w/_h
    # draw the seed's noise at that size and keep its centre, so a composition survives a change of size.
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    seed_resize_from_w: int = Field(-1, ge=-1, le=MAX_SIDE)  # 0 or -1: off
    seed_resize_from_h: int = Field(-1, ge=-1, le=MAX_SIDE)
    # Hires fix (A1111's txt2img fields): a first pass at width × height, upscaled (hr_scale, or to hr_resize_x ×
    # hr_resize_y) in latent space ("Latent…" upscalers) or in pixels, then redrawn at denoising_strength.
    enable_hr: bool = False
    hr_scale: float = Field(2.0, gt=0.0, le=8.0, allow_inf_nan=False)
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE)  # 0: from hr_scale
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = Field(0, ge=0, le=MAX_STEPS)  # 0: the first pass's steps
    hr_sampler_name: str | None = None  # None: the first pass's
    hr_scheduler: str | None = None
    hr_prompt: str = ""  # "": the first pass's
    hr_negative_prompt: str = ""
    hr_cfg: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False)  # Forge's; None: cfg_scale
    # SDXL refiner: this model takes over at refiner_switch_at of the denoising (of the hires pass with hires fix).
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = Field(0.8, gt=0.0, le=1.0, allow_inf_nan=False)
    # What a `<lora:NAME>` tag naming no file in the LoRA folder does: "error" refuses the request (CLI, Python, the
    # native API); "warn" draws without it and says so (A1111's behaviour, which its /sdapi/v1 API keeps).
    missing_lora: Literal["error", "warn"] = "error"

    @model_validator(mode="before")
    @classmethod
    def _split_combined_sampler_name(cls, data: Any) -> Any:
        """"DPM++ 2M Karras" is sampler "DPM++ 2M" on schedule type "Karras", as A1111 ≥1.9 reads it (the hires
        pass's hr_sampler_name too)."""
        if not isinstance(data, dict):
            return data
        data = _split_combined(data, ("sampler_name", "sampler"), ("scheduler", "schedule_type"))
        return _split_combined(data, ("hr_sampler_name",), ("hr_scheduler",))

    @field_validator(*PICTURE_FIELDS, mode="wrap")
    @classmethod
    def _readable_image(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> str | None:
        """A path's header is checked; a data: URL is decoded (and its header checked) once: the request keeps it
        as the DecodedDataUrl holding its bytes, which `replace` and whatever opens the picture then read."""
        from sdart.images.initimage import DecodedDataUrl, check_init_image

        if isinstance(value, DecodedDataUrl):  # checked when it was decoded
            return value
        value = handler(value)
        # A stored request (a job's history) stays readable after its picture is gone; running it checks again.
        if value is None or (info.context or {}).get("stored"):
            return value
        return check_init_image(value)

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

    @field_validator("hr_sampler_name", mode="before")
    @classmethod
    def _known_hires_sampler(cls, value: Any) -> Any:
        if value in (None, "", "Use same sampler"):  # A1111's UI and API spellings of "the first pass's"
            return None
        return find_sampler(value).name if isinstance(value, str) else value

    @field_validator("hr_scheduler", mode="before")
    @classmethod
    def _known_hires_schedule(cls, value: Any) -> Any:
        if value in (None, "", "Use same scheduler"):
            return None
        return find_schedule_type(value) if isinstance(value, str) else value

    @field_validator("hr_upscaler", mode="before")
    @classmethod
    def _known_upscaler(cls, value: Any) -> str:
        return find_upscaler(value)

    @field_validator("refiner_checkpoint")
    @classmethod
    def _no_refiner(cls, value: str | None) -> str | None:
        if value is None or value in ("", "None", "none"):  # A1111's spellings of "no refiner"
            return None
        return checkpoint_name(value)

    @field_validator("seed_resize_from_w", "seed_resize_from_h")
    @classmethod
    def _whole_latent(cls, value: int) -> int:
        if 0 < value < 8:
            raise ValueError("must be 0 or -1 (off) or at least 8 (a latent pixel is 8 pixels)")
        return value

    @field_validator("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
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
        strength = self.denoising_strength or 0.75  # A1111's img2img default, which resolving gives it
        if not stored and self.init_image is not None and int(self.steps * strength) < 1:
            raise ValueError(f"steps: {self.steps} step(s) at denoising_strength {strength:g} run no "
                             f"denoising step (img2img runs steps × strength); use at least "
                             f"{math.ceil(1 / strength)} steps")
        return self

    @model_validator(mode="after")
    def _schedule_fits_sampler(self) -> GenerationRequest:
        try:
            effective_schedule(find_sampler(self.sampler_name), self.scheduler)
        except ValueError as exc:
            raise ValueError(f"scheduler: {exc}") from None
        return self

    @model_validator(mode="after")
    def _seeds_fit(self) -> GenerationRequest:
        # Image i takes seed + i (subseed + i with variation seeds): the last one must still be a seed.
        counted = "subseed" if self.subseed_strength else "seed"
        if (last := getattr(self, counted) + self.images_total - 1) > MAX_SEED:
            raise ValueError(f"{counted}: the run's last image would take {counted} {last}, past {MAX_SEED}")
        if (self.seed_resize_from_w > 0) != (self.seed_resize_from_h > 0):
            raise ValueError("seed_resize_from_w: goes with seed_resize_from_h; set both (or neither)")
        return self

    @model_validator(mode="after")
    def _hires_fits(self) -> GenerationRequest:
        if not self.enable_hr:
            return self
        if self.init_image is not None:
            raise ValueError("enable_hr: hires fix is a second pass of txt2img; for a picture, run img2img at the "
                             "larger size (width, height)")
        if self.hr_scheduler is not None:  # an inherited schedule the hires sampler can't take falls back
            try:
                effective_schedule(find_sampler(self.hr_sampler_name or self.sampler_name), self.hr_scheduler)
            except ValueError as exc:
                raise ValueError(f"hr_scheduler: {exc}") from None
        if self.width and self.height:
            size = self.hires_size()
            if not (8 <= size.width <= MAX_SIDE and 8 <= size.height <= MAX_SIDE):
                given = "hr_scale" if not (self.hr_resize_x or self.hr_resize_y) else "hr_resize_x"
                raise ValueError(f"{given}: the hires picture would be {size.width}x{size.height}; each side must "
                                 f"be 8 to {MAX_SIDE}")
        return self

    @model_validator(mode="after")
    def _refiner_fits(self) -> GenerationRequest:
        if self.refiner_checkpoint is not None and self.mask is not None:
            raise ValueError("refiner_checkpoint: the refiner pass is not built for inpainting (mask)")
        return self

    def hires_size(self, latent_scale: int = 8) -> HiresSize:
        """Where the hires pass upscales to and what it crops (sdart.run.hires_size), for a VAE that scales by
        `latent_scale`; needs width and height."""
        return hires_size(self.width, self.height, self.hr_scale, self.hr_resize_x, self.hr_resize_y,
                          latent_scale=latent_scale)

    def image_seeds(self, index: int) -> tuple[int, int]:
        """(seed, subseed) of image `index` of the run, as A1111 counts them: with variation seeds every image
        keeps the seed and the subseed counts up; otherwise the seed counts up."""
        if self.subseed_strength:
            return self.seed, self.subseed + index
        return self.seed + index, self.subseed

    def starting_at(self, index: int) -> GenerationRequest:
        """This request from image `index` on: its seeds moved so that its first image is that one."""
        seed, subseed = self.image_seeds(index)
        return self.replace(seed=seed, subseed=subseed)

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
