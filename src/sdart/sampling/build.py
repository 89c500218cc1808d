"""Build the diffusers scheduler that runs an A1111 (sampler, schedule type) pair on a model.

The scheduler keeps the model's training schedule (its betas, prediction type) from the model's own scheduler
config and nothing else of it: the sampler fixes the algorithm options, and the schedule type the sigmas. The
result is a drop-in `pipe.scheduler`: the pipeline's plain `num_inference_steps` call is all it needs, since a
scheduler on sdart's sigmas computes them itself in `set_timesteps` (no `sigmas=`/`timesteps=` pipeline argument).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from sdart.sampling.samplers import AUTOMATIC, Sampler, effective_schedule, find_sampler
from sdart.sampling.schedules import SCHEDULE_TYPES, SigmaSchedule

# What a model's scheduler config says about its training, kept whatever scheduler it shipped with. Everything
# else (solver order, sigma spacing flags, timestep spacing) belongs to a sampler and comes from its options.
TRAINING_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
                 "rescale_betas_zero_snr", "timestep_type", "timestep_spacing", "steps_offset")


def training_config(base_config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in dict(base_config).items() if key in TRAINING_KEYS}


def make_scheduler(sampler: Sampler, base_config: Mapping[str, Any], schedule: str | None = None, *,
                   family: str = "sd1"):
    """The scheduler for `sampler` on `schedule` (None or "Automatic": the sampler's own), built from a model's
    scheduler config; `family` ("sd1", "sd2", "sdxl") picks Align Your Steps' table. Each call returns a fresh
    scheduler (a copy of one built once: DPM2's constructor alone takes a second).

    Raises ValueError when the sampler cannot take the schedule type (see `effective_schedule`)."""
    schedule = effective_schedule(sampler, schedule)
    config = tuple(sorted((key, tuple(value) if isinstance(value, list) else value)
                          for key, value in training_config(base_config).items()))
    return copy.deepcopy(_built(sampler.name, schedule, family, config))


@functools.lru_cache(maxsize=32)
def _built(sampler_name: str, schedule: str, family: str, config: tuple):
    import diffusers

    from sdart.sampling.kschedulers import ON_SIGMAS

    sampler, config = find_sampler(sampler_name), {k: list(v) if isinstance(v, tuple) else v for k, v in config}
    if schedule == AUTOMATIC:  # a timestep sampler on its scheduler's own grid
        return getattr(diffusers, sampler.scheduler_class).from_config(config, **sampler.options)
    cls = ON_SIGMAS[sampler.on_sigmas]
    # DDIM runs as Euler on a schedule type: DDIM's own options don't apply to that class
    options = dict(sampler.options) if sampler.on_sigmas == sampler.scheduler_class else {}
    options |= cls.schedule_options(SCHEDULE_TYPES[schedule].ends_at_zero)
    scheduler = cls.from_config(config, **options)
    scheduler.sigma_schedule = SigmaSchedule(schedule, family, sampler.discard_penultimate_sigma)
    return scheduler
