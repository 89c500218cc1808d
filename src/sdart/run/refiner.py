"""The SDXL refiner pass: the refiner model takes over the last part of a pass (the first pass, or the hires pass
with hires fix, as A1111 does by default), the base stopping at `denoising_end` and the refiner starting at
`denoising_start` of the same schedule (diffusers' "ensemble of expert denoisers").

A1111 (since 1.7) switches by timestep: the refiner takes the steps whose timestep t has (999 − t) / 1000 ≥
refiner_switch_at; diffusers' denoising_end keeps on the base the timesteps t ≥ round(1000 × (1 − switch)), the
same split. On a uniform schedule that is the last (1 − switch) of the steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdart.run.passes import PassCall, scheduler_for


@dataclass(frozen=True)
class Switch:
    """Where the base hands over: `at` (denoising_end of the base, denoising_start of the refiner) and the steps
    each side runs."""

    at: float
    base_steps: int
    refiner_steps: int


def pass_timesteps(scheduler, steps: int, strength: float | None) -> list[float]:
    """The timesteps a pass runs: a schedule of `steps`, its first (1 − strength) skipped for img2img (diffusers'
    img2img `get_timesteps`)."""
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = [float(t) for t in scheduler.timesteps]
    if strength is None:
        return timesteps
    skipped = steps - min(int(steps * strength), steps)
    return timesteps[skipped * scheduler.order:]


def switch_point(scheduler, steps: int, strength: float | None, switch_at: float) -> Switch | None:
    """Where the refiner takes over a pass, or None when it would have no step left. The base keeps at least the
    pass's first step (a switch earlier than that moves to just after it)."""
    timesteps = pass_timesteps(scheduler, steps, strength)
    train = scheduler.config.num_train_timesteps
    at = switch_at
    base = sum(t >= round(train - at * train) for t in timesteps)
    if base == len(timesteps):
        return None
    if base == 0:  # the pass starts past the switch: the base takes its first step, the refiner the rest
        at = (train - math.floor(timesteps[0])) / train
        base = sum(t >= round(train - at * train) for t in timesteps)
    return Switch(at, base, len(timesteps) - base) if base < len(timesteps) else None


def refiner_pass(pipe, continued: PassCall, latents, switch: Switch, *, schedule: str, ready,
                 conditioning) -> PassCall:
    """The refiner's part of `continued` (same schedule, prompts, guidance and generators; `conditioning`: its
    prompts through the refiner's own encoder), from the base's latents (B, C, h, w) at the switch."""
    order = int(getattr(continued.scheduler, "order", 1))
    return PassCall("refiner", pipe, scheduler_for(continued.sampler_name, schedule, ready), continued.steps,
                    continued.sampler_name, continued.prompt, continued.negative_prompt, conditioning,
                    continued.cfg_scale, continued.generators, start=dict(image=latents, denoising_start=switch.at),
                    calls_before=switch.base_steps * order)
