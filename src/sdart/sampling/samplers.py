"""A1111 sampler names → how sdart runs each one with diffusers' schedulers.

The list is A1111 1.10's (`modules/sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`, `sd_samplers_lcm.py`), in
its order, plus DEIS. Each sampler is either faithful (the same algorithm as A1111's, through a diffusers scheduler
or one of sdart's subclasses in `sdart.sampling.kschedulers`) or an alias: it runs the nearest faithful sampler,
named in `alias_of`, and `note` says what differs. A1111 ≥1.9 writes the schedule type as a suffix of older names
("DPM++ 2M Karras" = "DPM++ 2M" on the "Karras" schedule); `parse_sampler_name` splits it the same way.

Three ways a sampler takes a schedule type (`Sampler.on_sigmas`):
- the k-diffusion samplers step on any sigma schedule; their "Automatic" is A1111's per-sampler default
  (`automatic`: Karras for DPM++ 2M, Exponential for DPM++ 2M SDE, Uniform for Euler, …);
- DDIM, UniPC and LCM step on their timestep grid under "Automatic" and take other schedule types through a
  sigma-capable scheduler (DDIM with eta 0 is Euler in sigma, Song et al. 2021 eq. 14);
- PLMS (a fixed-stride method) and DEIS have their grid only (`on_sigmas` None): other schedule types are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdart.sampling.schedules import SCHEDULE_TYPES, find_schedule_type, name_key, schedule_spellings

AUTOMATIC = "Automatic"  # under it a timestep sampler keeps its scheduler's own grid


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler name and how sdart runs it."""

    name: str
    scheduler_class: str  # a diffusers class (or sdart's, see kschedulers) run on the model's grid or `automatic`
    options: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # A1111's options for this sampler, as its /sdapi/v1/samplers lists them ("scheduler": its Automatic, …)
    a1111_options: Mapping[str, Any] = field(default_factory=dict)
    # The class that steps on a sigma schedule (None: the sampler has its own timestep grid only)
    on_sigmas: str | None = None
    automatic: str = AUTOMATIC  # the schedule type "Automatic" stands for
    algorithm: str = ""  # where the algorithm comes from
    alias_of: str | None = None  # for an alias: the faithful sampler it runs as
    note: str = ""  # for an alias: what differs from A1111's

    @property
    def discard_penultimate_sigma(self) -> bool:
        return bool(self.a1111_options.get("discard_next_to_last_sigma"))

    @property
    def takes_schedules(self) -> bool:
        return self.on_sigmas is not None

    def api_options(self) -> dict[str, str]:
        """Options in the shape of A1111's /sdapi/v1/samplers (string values); an alias adds `sdart_alias_of`
        and `sdart_note`."""
        options = {key: str(value) for key, value in self.a1111_options.items()}
        if self.alias_of:
            options |= {"sdart_alias_of": self.alias_of, "sdart_note": self.note}
        return options


def _k(name: str, cls: str, aliases: tuple[str, ...], algorithm: str, a1111: Mapping[str, Any] | None = None,
       **options: Any) -> Sampler:
    """A k-diffusion sampler: steps on any sigma schedule; Automatic is A1111's `scheduler` option, else Uniform."""
    a1111 = a1111 or {}
    automatic = SCHEDULE_TYPES_BY_NAME[a1111.get("scheduler", "uniform")]
    return Sampler(name, cls, options, aliases, a1111, on_sigmas=cls, automatic=automatic, algorithm=algorithm)


def _alias(name: str, of: Sampler, aliases: tuple[str, ...], note: str, a1111: Mapping[str, Any] | None = None,
           automatic: str | None = None) -> Sampler:
    """A sampler sdart has no faithful version of: it runs `of` (on its own Automatic unless given)."""
    return Sampler(name, of.scheduler_class, of.options, aliases, a1111 or {}, on_sigmas=of.on_sigmas,
                   automatic=automatic or of.automatic, algorithm=of.algorithm, alias_of=of.name, note=note)


SCHEDULE_TYPES_BY_NAME = {s.name: s.label for s in SCHEDULE_TYPES.values()}
_KD = "k-diffusion sample_"
_DPMPP_2M_OPTIONS = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint",
                     "euler_at_final": False, "use_lu_lambdas": False}
_SDE = {**_DPMPP_2M_OPTIONS, "algorithm_type": "sde-dpmsolver++"}

_DPMPP_2M = _k("DPM++ 2M", "DPMSolverMultistepScheduler", ("k_dpmpp_2m",),
               "DPM-Solver++(2M), Lu et al. 2022 arXiv:2211.01095; " + _KD + "dpmpp_2m",
               {"scheduler": "karras"}, **_DPMPP_2M_OPTIONS)
_HEUN = _k("Heun", "HeunDiscreteScheduler", ("k_heun",), "Karras et al. 2022 Alg. 1; " + _KD + "heun",
           {"second_order": True})
_DDIM = Sampler("DDIM", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "leading",
                                          "steps_offset": 1}, ("ddim",), on_sigmas="EulerDiscreteScheduler",
                algorithm="Song et al. 2021 arXiv:2010.02502 (eta 0); on a schedule type: Euler in sigma (eq. 14)")

SAMPLERS: tuple[Sampler, ...] = (
    _DPMPP_2M,
    _k("DPM++ SDE", "SeededDPMSolverSDEScheduler", ("k_dpmpp_sde",),
       "DPM-Solver++ (stochastic, r = 1/2), Lu et al. 2022; " + _KD + "dpmpp_sde (Brownian-tree noise)",
       {"scheduler": "karras", "second_order": True, "brownian_noise": True}),
    _k("DPM++ 2M SDE", "DPMSolverMultistepScheduler", ("k_dpmpp_2m_sde",),
       "SDE-DPM-Solver++(2M), Lu et al. 2022; " + _KD + "dpmpp_2m_sde (midpoint)",
       {"scheduler": "exponential", "brownian_noise": True}, **_SDE),
    _k("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler", ("k_dpmpp_2m_sde_heun",),
       "SDE-DPM-Solver++(2M), Lu et al. 2022; " + _KD + "dpmpp_2m_sde (solver_type heun)",
       {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}, **{**_SDE, "solver_type": "heun"}),
    _k("DPM++ 2S a", "DPMSolver2SAncestralScheduler", ("k_dpmpp_2s_a",),
       "ancestral DPM-Solver++(2S), Lu et al. 2022; " + _KD + "dpmpp_2s_ancestral",
       {"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    _k("DPM++ 3M SDE", "DPMSolver3MSDEScheduler", ("k_dpmpp_3m_sde",),
       "SDE-DPM-Solver++(3M), Lu et al. 2022; " + _KD + "dpmpp_3m_sde",
       {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True},
       **{**_SDE, "solver_order": 3, "solver_type": "heun", "lower_order_final": False}),
    _k("Euler a", "EulerAncestralDiscreteScheduler", ("k_euler_a", "k_euler_ancestral", "euler_ancestral"),
       "ancestral Euler (eta 1), Karras et al. 2022; " + _KD + "euler_ancestral", {"uses_ensd": True}),
    _k("Euler", "EulerDiscreteScheduler", ("k_euler",), "Karras et al. 2022 Alg. 2 (churn 0); " + _KD + "euler"),
    _k("LMS", "LMSDiscreteScheduler", ("k_lms",), "linear multistep, order 4; " + _KD + "lms"),
    _HEUN,
    _k("DPM2", "KDPM2DiscreteScheduler", ("k_dpm_2",), "DPM-Solver-2 in sigma, Karras et al. 2022; " + _KD + "dpm_2",
       {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
    _k("DPM2 a", "KDPM2AncestralDiscreteScheduler", ("k_dpm_2_a",), "ancestral DPM2; " + _KD + "dpm_2_ancestral",
       {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    _alias("DPM fast", _DPMPP_2M, ("k_dpm_fast",), "DPM-Solver-fast (Lu et al. 2022, orders 3…3,2,1 set by the step count) "
           "is not in diffusers; on Exponential sigmas, evenly spaced in log sigma as its steps are",
           {"uses_ensd": True}, automatic="Exponential"),
    _alias("DPM adaptive", _DPMPP_2M, ("k_dpm_ad",), "adaptive-step DPM-Solver-12/23 is not in diffusers; the requested "
           "steps on Exponential sigmas (A1111's adaptive solver ignores the step count)",
           {"uses_ensd": True}, automatic="Exponential"),
    _alias("Restart", _HEUN, ("restart",), "Restart sampling (Xu et al. 2023, arXiv:2306.14878) is not in diffusers; "
           "its inner Heun steps on Karras sigmas, without the restarts",
           {"scheduler": "karras", "second_order": True}, automatic="Karras"),
    _DDIM,
    _alias("DDIM CFG++", _DDIM, ("ddim_cfgpp",), "CFG++ (Chung et al. 2024, arXiv:2406.08070) re-noises with the "
           "unconditional prediction, which diffusers' pipeline does not expose; plain DDIM"),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False, "timestep_spacing": "leading",
                                      "steps_offset": 1}, ("plms", "PNDM", "pndm"),
            algorithm="pseudo linear multistep, Liu et al. 2022 arXiv:2202.09778 (no Runge-Kutta warm-up, as CompVis)"),
    Sampler("UniPC", "UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh1", "lower_order_final": True,
                                                 "timestep_spacing": "linspace", "final_sigmas_type": "sigma_min"},
            ("unipc",), on_sigmas="UniPCMultistepScheduler",
            algorithm="UniPC, Zhao et al. 2023 arXiv:2302.04867 (A1111's defaults: order 3, bh1, time-uniform; "
                      "bh2 on a schedule type)"),
    Sampler("LCM", "LCMScheduler", aliases=("k_lcm", "lcm"), on_sigmas="LCMScheduler",
            algorithm="latent consistency multistep sampling, Luo et al. 2023 arXiv:2310.04378"),
    # DEIS's Karras path in diffusers 0.42 ends on a zero-length step (its last sigma repeated), so it keeps its grid
    Sampler("DEIS", "DEISMultistepScheduler", aliases=("deis",),
            algorithm="DEIS, Zhang & Chen 2022 arXiv:2204.13902 (sdart's; not in A1111)"),
)

DEFAULT_SAMPLER = "DPM++ 2M"  # A1111 1.10's first (and default) sampler; its Automatic is Karras

_BY_KEY: dict[str, Sampler] = {name_key(spelling): s for s in SAMPLERS for spelling in (s.name, *s.aliases)}
# Names of A1111 < 1.9, whose schedule was part of the sampler name: alias → (sampler, schedule type).
_KARRAS_ALIASES = {"k_lms_ka": "LMS", "k_dpm_2_ka": "DPM2", "k_dpm_2_a_ka": "DPM2 a", "k_dpmpp_2s_a_ka": "DPM++ 2S a",
                   "k_dpmpp_2m_ka": "DPM++ 2M", "k_dpmpp_sde_ka": "DPM++ SDE", "k_dpmpp_2m_sde_ka": "DPM++ 2M SDE",
                   "k_dpmpp_2m_sde_heun_ka": "DPM++ 2M SDE Heun", "k_dpmpp_3m_sde_ka": "DPM++ 3M SDE"}
_COMBINED_ALIASES = {name_key(alias): (name, "Karras") for alias, name in _KARRAS_ALIASES.items()}
# Schedule spellings, longest first: "Euler SGM Uniform" ends in "sgm uniform" before it ends in "uniform".
_SUFFIXES = sorted(schedule_spellings().items(), key=lambda item: -len(item[0]))


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def find_sampler(name: str) -> Sampler:
    """A sampler by its A1111 name or alias, ignoring case; ValueError lists the valid names."""
    sampler = _BY_KEY.get(name_key(name))
    if sampler is None:
        raise ValueError(f"unknown sampler {name!r}; valid names: {', '.join(sampler_names())} (a schedule type may "
                         "follow the name, as in 'DPM++ 2M Karras')")
    return sampler


def split_schedule_suffix(name: str) -> tuple[str, str | None]:
    """("DPM++ 2M", "Karras") for "DPM++ 2M Karras": the name without a trailing schedule type, and that type's
    label (None when there is none), as A1111's `get_sampler_and_scheduler` reads names."""
    key = name_key(name)
    if key in _COMBINED_ALIASES:
        return _COMBINED_ALIASES[key]
    for spelling, label in _SUFFIXES:
        if key.endswith(" " + spelling):
            # keep the caller's spelling of the rest: cut as many words as the schedule spelling has
            words = name.replace("_", " ").split()
            return " ".join(words[: len(words) - len(spelling.split())]), label
    return name, None


def parse_sampler_name(name: str) -> tuple[Sampler, str | None]:
    """The sampler a (possibly combined) name means and the schedule type its suffix names (None: no suffix).

    A whole name wins over a split one, so "DPM++ 2M SDE" stays one sampler; ValueError for an unknown name."""
    key = name_key(name)
    if key in _BY_KEY:
        return _BY_KEY[key], None
    base, schedule = split_schedule_suffix(name)
    if schedule is not None and name_key(base) in _BY_KEY:
        return _BY_KEY[name_key(base)], schedule
    find_sampler(name)  # raises with the valid names
    raise AssertionError("unreachable")


def effective_schedule(sampler: Sampler, schedule: str | None) -> str:
    """The schedule type a (sampler, requested type) pair runs with: "Automatic" becomes the sampler's own
    (`Sampler.automatic`; for DDIM, PLMS, UniPC, LCM and DEIS that is their scheduler's grid, still "Automatic").

    Raises ValueError, naming the alternatives, when the sampler has only its own grid (PLMS)."""
    if schedule is None or find_schedule_type(schedule) == AUTOMATIC:
        return sampler.automatic
    schedule = find_schedule_type(schedule)
    if not sampler.takes_schedules:
        raise ValueError(f"sampler {sampler.name!r} steps on its model's fixed timestep grid, so schedule type "
                         f"{schedule!r} cannot apply; use 'Automatic', or LMS (linear multistep on any schedule)")
    return schedule


__all__ = ["AUTOMATIC", "DEFAULT_SAMPLER", "SAMPLERS", "SCHEDULE_TYPES", "Sampler", "effective_schedule",
           "find_sampler", "find_schedule_type", "parse_sampler_name", "sampler_names", "split_schedule_suffix"]
