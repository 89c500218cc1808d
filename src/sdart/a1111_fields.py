"""Which A1111 request fields, options and infotext keys sdart applies: the one list behind the /sdapi/v1 API and
`sdart generate --from`.

The rule is mechanical: a name is applied when `GenerationRequest` has a field of that A1111 name (or an alias), or
when a front end handles it itself (`FRONT_END_FIELDS`). A field another change adds to `GenerationRequest` with its
A1111 name (`enable_hr`, `subseed`, `emphasis`, …) is therefore applied by both front ends at once, and its infotext
key with it, without touching this module. Everything else that asks for something (a value other than what sdart
does anyway) is named back to the user: `not applied: Face restoration, ADetailer model`.

Field names, defaults and infotext keys follow A1111 1.10 (modules/processing.py dataclasses, modules/api/models.py,
the paste fields of modules/ui.py and modules/processing_scripts/*.py) and Forge's additions.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sdart.request import GenerationRequest

DATA_DIR = Path(__file__).parent / "a1111_data"
_MISSING = object()


@dataclass(frozen=True)
class A1111Field:
    """One A1111 txt2img/img2img field: what A1111 uses when it is absent, and which values ask for nothing that
    sdart does not do anyway."""

    name: str
    label: str  # A1111's infotext key or UI label: how notes name it
    default: Any = None  # what A1111 uses when the field is absent
    sdart: tuple[Any, ...] = ()  # the values that mean what sdart does anyway; empty: A1111's default does
    needs: tuple[str, ...] = ()  # it matters only when one of these fields is set (hires fix, a mask, …)

    def asks_for_something(self, value: Any) -> bool:
        return not _neutral(value, (None, *(self.sdart or (self.default,))))


_HIRES = ("enable_hr",)
_MASK = ("mask",)
FIELDS: tuple[A1111Field, ...] = (
    # StableDiffusionProcessing (both tabs)
    A1111Field("prompt", "Prompt", ""), A1111Field("negative_prompt", "Negative prompt", ""),
    A1111Field("styles", "Styles", [], ([],)),
    A1111Field("seed", "Seed", -1), A1111Field("subseed", "Variation seed", -1, needs=("subseed_strength",)),
    A1111Field("subseed_strength", "Variation seed strength", 0),
    A1111Field("seed_resize_from_h", "Seed resize from", -1, (-1, 0)),
    A1111Field("seed_resize_from_w", "Seed resize from", -1, (-1, 0)),
    A1111Field("sampler_name", "Sampler"), A1111Field("scheduler", "Schedule type"),
    A1111Field("batch_size", "Batch size", 1), A1111Field("n_iter", "Batch count", 1), A1111Field("steps", "Steps", 50),
    A1111Field("cfg_scale", "CFG scale", 7.0), A1111Field("width", "Size", 512), A1111Field("height", "Size", 512),
    A1111Field("restore_faces", "Face restoration", None, (False,)), A1111Field("tiling", "Tiling", None, (False,)),
    A1111Field("do_not_save_samples", "do_not_save_samples", False, (True,)),
    A1111Field("do_not_save_grid", "do_not_save_grid", False, (True,)),
    # Ancestral samplers run at eta 1, DDIM at 0 (as sdart's do); s_* are A1111's option defaults (s_noise 1, others 0).
    A1111Field("eta", "Eta", None, (0.0, 1.0)),
    A1111Field("denoising_strength", "Denoising strength", 0.75, needs=("init_image", "enable_hr")),
    A1111Field("s_min_uncond", "NGMS", 0.0), A1111Field("s_churn", "Sigma churn", 0.0),
    A1111Field("s_tmax", "Sigma tmax", 0.0, (0.0, math.inf)), A1111Field("s_tmin", "Sigma tmin", 0.0),
    A1111Field("s_noise", "Sigma noise", 1.0),
    A1111Field("override_settings", "override_settings", None, ({},)),
    A1111Field("override_settings_restore_afterwards", "override_settings_restore_afterwards", True),
    A1111Field("refiner_checkpoint", "Refiner", None, ("", "None", "none")),
    A1111Field("refiner_switch_at", "Refiner switch at", None, (0, 1.0), needs=("refiner_checkpoint",)),
    A1111Field("disable_extra_networks", "disable_extra_networks", False),
    A1111Field("firstpass_image", "firstpass_image", None, ("",)), A1111Field("comments", "comments", None, ({},)),
    # StableDiffusionProcessingTxt2Img
    A1111Field("enable_hr", "Hires fix", False),
    A1111Field("firstphase_width", "First pass size", 0, needs=_HIRES),
    A1111Field("firstphase_height", "First pass size", 0, needs=_HIRES),
    A1111Field("hr_scale", "Hires upscale", 2.0, needs=_HIRES), A1111Field("hr_upscaler", "Hires upscaler", needs=_HIRES),
    A1111Field("hr_second_pass_steps", "Hires steps", 0, needs=_HIRES),
    A1111Field("hr_resize_x", "Hires resize", 0, needs=_HIRES), A1111Field("hr_resize_y", "Hires resize", 0, needs=_HIRES),
    A1111Field("hr_checkpoint_name", "Hires checkpoint", None, ("Use same checkpoint", ""), needs=_HIRES),
    A1111Field("hr_sampler_name", "Hires sampler", None, ("Use same sampler", ""), needs=_HIRES),
    A1111Field("hr_scheduler", "Hires schedule type", None, ("Use same scheduler", ""), needs=_HIRES),
    A1111Field("hr_prompt", "Hires prompt", "", needs=_HIRES),
    A1111Field("hr_negative_prompt", "Hires negative prompt", "", needs=_HIRES),
    A1111Field("force_task_id", "force_task_id"),
    # Forge's additions to txt2img
    A1111Field("hr_cfg", "Hires CFG Scale", 1.0, needs=_HIRES),
    A1111Field("hr_distilled_cfg", "Hires Distilled CFG Scale", 3.5, needs=_HIRES),
    A1111Field("distilled_cfg_scale", "Distilled CFG Scale", 3.5),
    A1111Field("hr_additional_modules", "Hires modules", None, ([], ["Use same choices"]), needs=_HIRES),
    # StableDiffusionProcessingImg2Img; sdart inpaints as A1111's "original" content on the whole picture.
    A1111Field("init_images", "init_images"), A1111Field("resize_mode", "Resize mode", 0),
    A1111Field("image_cfg_scale", "Image CFG scale"), A1111Field("mask", "mask"),
    A1111Field("mask_blur_x", "Mask blur", 4, needs=_MASK), A1111Field("mask_blur_y", "Mask blur", 4, needs=_MASK),
    A1111Field("mask_blur", "Mask blur", 4, needs=_MASK), A1111Field("mask_round", "mask_round", True, (True, False)),
    A1111Field("inpainting_fill", "Masked content", 0, (1,), needs=_MASK),
    A1111Field("inpaint_full_res", "Inpaint area", True, (False,), needs=_MASK),
    A1111Field("inpaint_full_res_padding", "Masked area padding", 0, (0, 32), needs=_MASK),
    A1111Field("inpainting_mask_invert", "Mask mode", 0, needs=_MASK),
    A1111Field("initial_noise_multiplier", "Noise multiplier", None, (1.0,), needs=("init_image",)),
    A1111Field("latent_mask", "latent_mask"), A1111Field("include_init_images", "include_init_images", False),
    # The API's own
    A1111Field("sampler_index", "Sampler", "Euler"), A1111Field("script_name", "script", None, ("",)),
    A1111Field("script_args", "script_args", [], ([],)), A1111Field("send_images", "send_images", True),
    A1111Field("save_images", "save_images", False, (True,)), A1111Field("alwayson_scripts", "alwayson_scripts", {}),
    A1111Field("infotext", "infotext"),
)
FIELDS_BY_NAME = {field.name: field for field in FIELDS}
FORGE_FIELDS = frozenset({"hr_cfg", "hr_distilled_cfg", "distilled_cfg_scale", "hr_additional_modules"})
_TXT2IMG_ONLY = frozenset({"enable_hr", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler",
                           "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name",
                           "hr_scheduler", "hr_prompt", "hr_negative_prompt", "hr_cfg", "hr_distilled_cfg",
                           "hr_additional_modules"})
_IMG2IMG_ONLY = frozenset({"init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur_x", "mask_blur_y",
                           "mask_blur", "mask_round", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
                           "inpainting_mask_invert", "initial_noise_multiplier", "latent_mask", "include_init_images"})
# Each tab's A1111 fields (what A1111 echoes in `parameters`), Forge's left out.
TXT2IMG_FIELDS = tuple(f.name for f in FIELDS if f.name not in _IMG2IMG_ONLY and f.name not in FORGE_FIELDS)
IMG2IMG_FIELDS = tuple(f.name for f in FIELDS if f.name not in _TXT2IMG_ONLY and f.name not in FORGE_FIELDS)

# Handled by the API front end itself: images in and out, styles, settings and the infotext field. Saving is
# always on (every image is kept in the job history), so save_images / do_not_save_* / force_task_id change nothing.
FRONT_END_FIELDS = frozenset({
    "sampler_index", "styles", "override_settings", "override_settings_restore_afterwards", "init_images", "mask",
    "include_init_images", "send_images", "save_images", "do_not_save_samples", "do_not_save_grid", "force_task_id",
    "infotext", "comments", "script_args",
})

# A1111 settings (override_settings, /options) that set a request field of another name; any other setting sets the
# request field of its own name if there is one (`emphasis`, `eta_noise_seed_delta`, …).
OPTION_FIELDS = {"sd_model_checkpoint": "model", "CLIP_stop_at_last_layers": "clip_skip", "sd_vae": "vae"}

# Infotext keys → the request fields they set (A1111's paste fields), where the key is not a field's label.
INFOTEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "Size": ("width", "height"), "Seed resize from": ("seed_resize_from_w", "seed_resize_from_h"),
    "Hires resize": ("hr_resize_x", "hr_resize_y"), "First pass size": ("firstphase_width", "firstphase_height"),
    "Model": ("model",), "Clip skip": ("clip_skip",), "Eta DDIM": ("eta",), "Sampler": ("sampler_name",),
    "Mask blur": ("mask_blur",),
}
# Infotext values that A1111 writes as words for a field holding a number or a flag.
INFOTEXT_VALUES: dict[str, dict[str, Any]] = {
    "Masked content": {"fill": 0, "original": 1, "latent noise": 2, "latent nothing": 3},
    "Mask mode": {"Inpaint masked": 0, "Inpaint not masked": 1},
    "Inpaint area": {"Whole picture": False, "Only masked": True},
}
_ANY_VALUE_MEANS_ON = {"Face restoration": "restore_faces"}  # the value names the model; the key turns it on
# Keys that describe the image (hashes, versions, provenance) and ask nothing of a re-run.
DESCRIPTIVE_KEYS = frozenset({
    "Model hash", "VAE hash", "Lora hashes", "TI hashes", "Hashes", "Version", "Init image hash", "Batch size",
    "Batch pos", "Created Date", "Civitai resources", "Civitai metadata", "App", "Operations", "Backend", "User",
    "Pipeline", "workflow", "Score",
})
# The value of a key sdart does not know that says its feature was off (`draft: false`, `RP Active: False`).
_OFF_VALUES = frozenset({"false", "none", "off", "disabled", "0", ""})
# sdart's own infotext keys for engine settings: made with them, the picture differs (sdart.loading.approximations).
SETTING_KEYS = {"Step cache": "step_cache", "Token downsampling": "token_downsampling", "Weights": "quantize",
                "VAE": "vae", "Lora": "loras", "RNG": "rng"}


@cache
def _options_file() -> dict[str, Any]:
    """a1111_data/options.json, read once: A1111's settings (`options`) and their infotext keys (`infotext`)."""
    return json.loads((DATA_DIR / "options.json").read_text())


def a1111_options() -> dict[str, Any]:
    """A1111's every setting and its default (`/sdapi/v1/options`)."""
    return _options_file()["options"]


@cache
def option_infotext_keys() -> dict[str, str]:
    """Infotext key → A1111 setting (`Clip skip` → `CLIP_stop_at_last_layers`, `ENSD` → `eta_noise_seed_delta`)."""
    return {key: option for option, key in _options_file()["infotext"].items()}


@cache
def request_field_names() -> frozenset[str]:
    """GenerationRequest's field names and their aliases."""
    names: set[str] = set()
    for name, info in GenerationRequest.model_fields.items():
        names.add(name)
        alias = info.validation_alias
        names.update(getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else []))
    return frozenset(names)


def is_applied(name: str) -> bool:
    """Whether sdart applies the A1111 request field `name`."""
    return name in request_field_names() or name in FRONT_END_FIELDS


def option_field(option: str) -> str | None:
    """The request field an A1111 setting sets, when GenerationRequest has it."""
    name = OPTION_FIELDS.get(option, option)
    return name if name in request_field_names() else None


# --- the API payload --------------------------------------------------------------------------------------------


def payload_not_applied(payload: Mapping[str, Any], *, img2img: bool = False) -> list[str]:
    """Labels of the payload's fields that ask for something sdart does not do, in payload order; unknown keys by
    their own name. Fields absent from the payload count with A1111's default (a mask without `inpainting_fill`
    asks for A1111's default "fill")."""
    notes: list[str] = []
    for field in FIELDS:
        if field.name in ("script_name", "alwayson_scripts"):
            continue  # named script by script below
        value = payload.get(field.name, _MISSING)
        if value is _MISSING:
            if field.default is None or not (field.needs and img2img):
                continue
            value = field.default
        if is_applied(field.name) or not field.asks_for_something(value):
            continue
        if field.needs and not any(_is_set(payload.get(need)) for need in field.needs):
            continue
        notes.append(field.label)
    notes += [key for key in payload if key not in FIELDS_BY_NAME and key not in request_field_names()]
    notes += _scripts_not_applied(payload)
    return list(dict.fromkeys(notes))


def _scripts_not_applied(payload: Mapping[str, Any]) -> list[str]:
    notes = []
    if isinstance(payload.get("script_name"), str) and payload["script_name"]:
        notes.append(f"script {payload['script_name']}")
    scripts = payload.get("alwayson_scripts")
    if isinstance(scripts, Mapping):
        notes += [f"{name} (alwayson_scripts)" for name, value in scripts.items() if _script_asks(value)]
    return notes


def _script_asks(value: Any) -> bool:
    """An always-on script entry that would do something: arguments, or settings besides an empty `args`."""
    if not isinstance(value, Mapping):
        return bool(value)
    return bool(value.get("args")) or any(key != "args" and _is_set(v) for key, v in value.items())


def options_to_fields(options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A1111 settings (override_settings) → request fields, and the settings that ask for something sdart does not
    do (a value other than A1111's default), named by their infotext label where they have one."""
    labels = _options_file()["infotext"]  # A1111 setting → its infotext key
    defaults = a1111_options()
    fields: dict[str, Any] = {}
    notes: list[str] = []
    for option, value in options.items():
        name = option_field(option)
        if name is not None:
            if value is not None:
                fields[name] = value
        elif option not in defaults or not _neutral(value, (None, defaults[option])):
            notes.append(labels.get(option, option))
    return fields, notes


# --- the infotext -----------------------------------------------------------------------------------------------


def infotext_targets(key: str) -> tuple[str, ...]:
    """The request fields an infotext key sets, whether or not GenerationRequest has them."""
    if key == "Model hash":  # describes the model that `Model` names (A1111 matches checkpoints by it)
        return ()
    if key in INFOTEXT_FIELDS:
        return INFOTEXT_FIELDS[key]
    if key in _ANY_VALUE_MEANS_ON:
        return (_ANY_VALUE_MEANS_ON[key],)
    names = [field.name for field in FIELDS if field.label == key]
    if names:
        return tuple(names[:1])
    option = option_infotext_keys().get(key)
    return (OPTION_FIELDS.get(option, option),) if option else ()


def infotext_fields(params: Mapping[str, str]) -> dict[str, Any]:
    """The GenerationRequest fields an infotext's parameters set (only fields the request has), values converted to
    the field's type where they parse (a value that doesn't is left for the request to refuse by name)."""
    fields: dict[str, Any] = {}
    known = request_field_names()
    for key, text in params.items():
        targets = infotext_targets(key)
        if not targets or not all(name in known for name in targets):
            continue
        if len(targets) == 2:  # "WxH"
            size = re.fullmatch(r"\s*(-?\d+)\s*x\s*(-?\d+)\s*", text)
            values = (int(size.group(1)), int(size.group(2))) if size else (text, text)
        elif key in _ANY_VALUE_MEANS_ON:
            values = (True,)
        else:
            values = (INFOTEXT_VALUES.get(key, {}).get(text, text),)
        for name, value in zip(targets, values):
            fields[name] = _typed(name, value)
    # A1111: the hires fix was on when the image has a denoising strength and any hires key.
    if "enable_hr" in known and "Denoising strength" in params and any(
            key in params for key in ("Hires upscale", "Hires upscaler", "Hires resize")):
        fields["enable_hr"] = True
    return fields


def asks_nothing(key: str, params: Mapping[str, str]) -> bool:
    """Whether an infotext key only describes the image (hashes, versions, provenance), or names a feature of
    another tool as off (`draft: false`): nothing a re-run must do."""
    if key == "Model hash":
        return "Model" in params  # without `Model` (A1111 < 1.0), the hash is what names the checkpoint
    if key in DESCRIPTIVE_KEYS:
        return True
    return not infotext_targets(key) and key not in SETTING_KEYS and params[key].strip().lower() in _OFF_VALUES


def infotext_not_applied(params: Mapping[str, str], request: Mapping[str, Any],
                         settings: Mapping[str, str] | None = None) -> list[str]:
    """The infotext keys a re-run as `request` (its fields, after every override) does not apply, in order.

    `settings` holds sdart's own setting keys (SETTING_KEYS) as the re-run will write them: a key counts as applied
    when the re-run writes the same value.
    """
    known = request_field_names()
    notes = []
    for key, text in params.items():
        if asks_nothing(key, params):
            continue
        targets = infotext_targets(key)
        if not targets or not all(name in known for name in targets):
            if key not in SETTING_KEYS or (settings or {}).get(key) != text:
                notes.append(key)
            continue
        needs = FIELDS_BY_NAME[targets[0]].needs if targets[0] in FIELDS_BY_NAME else ()
        if needs and not any(_is_set(request.get(need)) for need in needs):
            notes.append(key)
    return notes


# --- helpers ----------------------------------------------------------------------------------------------------


def _is_set(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {}) and value != "None"


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    return any(value is candidate or type(value) is not bool and value == candidate for candidate in neutral) or (
        isinstance(value, bool) and value in [c for c in neutral if isinstance(c, bool)])


def _typed(name: str, value: Any) -> Any:
    """`value` (infotext text) as the request field's type: int, float or bool; text that doesn't parse is kept."""
    if not isinstance(value, str):
        return value
    annotation = GenerationRequest.model_fields[name].annotation if name in GenerationRequest.model_fields else str
    kinds = set(typing.get_args(annotation)) or {annotation}
    text = value.strip()
    try:
        if bool in kinds:
            return {"true": True, "false": False}.get(text.lower(), value)
        if int in kinds:
            return int(text)
        if float in kinds:
            return float(text)
    except ValueError:
        return value
    return value
