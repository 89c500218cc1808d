"""`sdart generate`'s options for the passes after the first and for the noise (hires fix, variation seeds, the
SDXL refiner) → the request fields of A1111's names."""

from __future__ import annotations

import re
from typing import Any


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """WxH → (width, height)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{option} = {text!r}: must be WIDTHxHEIGHT, like 1024x768")
    return int(match.group(1)), int(match.group(2))


def pass_fields(*, hires: bool | None, hires_scale, hires_size, hires_upscaler, hires_steps, hires_strength,
                 hires_sampler, hires_scheduler, hires_prompt, hires_negative, hires_cfg, subseed, subseed_strength,
                 seed_resize_from, refiner, refiner_switch_at) -> dict[str, Any]:
    """The request fields of the hires, variation-seed and refiner options (None: not given)."""
    hires_options = dict(hr_scale=hires_scale, hr_upscaler=hires_upscaler, hr_second_pass_steps=hires_steps,
                         hr_sampler_name=hires_sampler, hr_scheduler=hires_scheduler, hr_prompt=hires_prompt,
                         hr_negative_prompt=hires_negative, hr_cfg=hires_cfg)
    if (box := parse_size(hires_size, "--hires-size")) is not None:
        hires_options.update(hr_resize_x=box[0], hr_resize_y=box[1])
    given = [name for name, value in hires_options.items() if value is not None] or hires_strength is not None
    if hires is False and given:
        raise ValueError("--no-hires: the --hires-* options given need hires fix on")
    fields = {**hires_options, "enable_hr": True if given else hires, "subseed": subseed,
              "subseed_strength": subseed_strength, "refiner_checkpoint": refiner,
              "refiner_switch_at": refiner_switch_at}
    if (resize := parse_size(seed_resize_from, "--seed-resize-from")) is not None:
        fields.update(seed_resize_from_w=resize[0], seed_resize_from_h=resize[1])
    return fields
