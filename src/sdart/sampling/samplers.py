"""A1111 sampler and schedule-type names ↔ diffusers scheduler classes.

The mapping follows the diffusers scheduler overview ("A1111/k-diffusion → diffusers" table). A sampler is
a scheduler class plus constructor options; a schedule type (A1111's "Schedule type") picks the sigma spacing
for the schedulers that support it. Schedulers are built with `Cls.from_config(base_config, **options)`, so the
model's own training schedule (betas, prediction type, timestep spacing) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A1111's "Schedule type" values we support → scheduler constructor flag ("" = the scheduler's default).
SCHEDULE_TYPES: dict[str, str] = {
    "Automatic": "",
    "Uniform": "",
    "Karras": "use_karras_sigmas",
    "Exponential": "use_exponential_sigmas",
    "Beta": "use_beta_sigmas",
}


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler name and how diffusers spells it."""

    name: str
    scheduler_class: str
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # The schedule type the A1111 name implies ("DPM++ 2M Karras" → "Karras"); "Automatic" otherwise.
    default_schedule: str = "Automatic"
    # Whether the scheduler takes the sigma-spacing flags (use_karras_sigmas, …); the k-diffusion ports do.
    sigma_schedules: bool = True


def _karras(base: Sampler, name: str, aliases: tuple[str, ...]) -> Sampler:
    return Sampler(name, base.scheduler_class, base.options, aliases, default_schedule="Karras")


def _fixed(name: str, scheduler_class: str, aliases: tuple[str, ...]) -> Sampler:
    """A sampler whose scheduler has one fixed timestep schedule (no sigma-spacing options)."""
    return Sampler(name, scheduler_class, aliases=aliases, sigma_schedules=False)


_EULER_A = _fixed("Euler a", "EulerAncestralDiscreteScheduler", ("k_euler_a", "k_euler_ancestral", "euler_ancestral"))
_EULER = Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",))
_LMS = Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms",))
_HEUN = Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun",))
_DPM2 = Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2",))
_DPM2_A = Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a",))
_DPMPP_2M = Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("k_dpmpp_2m",))
_DPMPP_2M_SDE = Sampler(
    "DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, aliases=("k_dpmpp_2m_sde",)
)
_DPMPP_SDE = Sampler("DPM++ SDE", "DPMSolverSinglestepScheduler", aliases=("k_dpmpp_sde",))

SAMPLERS: tuple[Sampler, ...] = (
    _DPMPP_2M,
    _karras(_DPMPP_2M, "DPM++ 2M Karras", ("k_dpmpp_2m_ka",)),
    _DPMPP_2M_SDE,
    _karras(_DPMPP_2M_SDE, "DPM++ 2M SDE Karras", ("k_dpmpp_2m_sde_ka",)),
    _DPMPP_SDE,
    _karras(_DPMPP_SDE, "DPM++ SDE Karras", ("k_dpmpp_sde_ka",)),
    _EULER_A,
    _EULER,
    _LMS,
    _karras(_LMS, "LMS Karras", ("k_lms_ka",)),
    _HEUN,
    _DPM2,
    _karras(_DPM2, "DPM2 Karras", ("k_dpm_2_ka",)),
    _DPM2_A,
    _karras(_DPM2_A, "DPM2 a Karras", ("k_dpm_2_a_ka",)),
    _fixed("DDIM", "DDIMScheduler", ("ddim",)),
    _fixed("PNDM", "PNDMScheduler", ("PLMS",)),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("unipc",)),
    Sampler("DEIS", "DEISMultistepScheduler", aliases=("deis",)),
    _fixed("LCM", "LCMScheduler", ("lcm",)),
)

DEFAULT_SAMPLER = "DPM++ 2M Karras"


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


_BY_KEY: dict[str, Sampler] = {}
for _sampler in SAMPLERS:
    for _name in (_sampler.name, *_sampler.aliases):
        _BY_KEY[_key(_name)] = _sampler


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def find_sampler(name: str) -> Sampler:
    """Look a sampler up by its A1111 name or alias, ignoring case; ValueError lists the valid names."""
    sampler = _BY_KEY.get(_key(name))
    if sampler is None:
        raise ValueError(f"unknown sampler {name!r}; valid names: {', '.join(sampler_names())}")
    return sampler


def find_schedule_type(name: str) -> str:
    for known in SCHEDULE_TYPES:
        if known.lower() == name.strip().lower():
            return known
    raise ValueError(f"unknown schedule type {name!r}; valid types: {', '.join(SCHEDULE_TYPES)}")


def effective_schedule(sampler: Sampler, schedule: str | None) -> str:
    """The schedule type a (sampler, requested type) pair runs with: an explicit type wins over the name's.

    Raises ValueError when the sampler's scheduler has no such option (Euler a, DDIM, PNDM, LCM).
    """
    if schedule is None or schedule == "Automatic":
        return sampler.default_schedule
    if SCHEDULE_TYPES[schedule] and not sampler.sigma_schedules:
        raise ValueError(
            f"sampler {sampler.name!r} has a fixed schedule; schedule type {schedule!r} needs one of: "
            + ", ".join(s.name for s in SAMPLERS if s.sigma_schedules and s.default_schedule == "Automatic")
        )
    return schedule


def make_scheduler(sampler: Sampler, base_config: Any, schedule: str | None = None):
    """Build the diffusers scheduler for `sampler` from a pipeline's scheduler config."""
    import diffusers

    cls = getattr(diffusers, sampler.scheduler_class)
    options = dict(sampler.options)
    flag = SCHEDULE_TYPES[effective_schedule(sampler, schedule)]
    if flag:
        options[flag] = True
    # Keep the model's training schedule (betas, prediction type, spacing) but not the sigma-spacing or
    # algorithm flags that the scheduler the model shipped with may carry.
    dropped = {f for f in SCHEDULE_TYPES.values() if f} | {"algorithm_type"}
    config = {k: v for k, v in dict(base_config).items() if k not in dropped}
    return cls.from_config(config, **options)
