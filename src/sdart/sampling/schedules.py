"""A1111's schedule types: the noise levels (sigmas) a k-diffusion sampler steps through.

Each schedule maps (steps n, the model's noise levels) to n + 1 sigmas, from the largest down to 0 (KL Optimal
ends at the model's smallest sigma instead), computed as A1111 1.10 (`modules/sd_schedulers.py`) and k-diffusion
compute them, in float64. The model's noise levels are σ_t = √((1 − ᾱ_t) / ᾱ_t) for its training timesteps
t = 0 … T − 1 (ᾱ: `alphas_cumprod` of its scheduler); between two timesteps σ is interpolated linearly in log σ
as k-diffusion's `DiscreteSchedule` does. Labels are what A1111 shows and writes in the infotext ("Schedule
type: Karras"); names are what its API also accepts ("karras").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Align Your Steps' 10-step schedules (11 noise levels) for SD 1.5 and SDXL, as published by NVIDIA
# (research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html) and used by A1111. SD 2 gets the SD 1.5 table.
AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5; A1111's default rho for Karras
POLYEXPONENTIAL_RHO = 1.0  # A1111's default rho for Polyexponential (1: the same as Exponential)
BETA_ALPHA = BETA_BETA = 0.6  # A1111's defaults (`beta_dist_alpha`, `beta_dist_beta`)


class ModelSigmas:
    """The model's discrete noise levels and k-diffusion's log-linear map between timestep t and sigma."""

    def __init__(self, alphas_cumprod) -> None:
        cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
        self.sigmas = np.sqrt((1 - cumprod) / cumprod)  # (T,), rising with t
        self.log_sigmas = np.log(self.sigmas)
        self.timesteps = np.arange(len(self.sigmas), dtype=np.float64)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_to_sigma(self, t) -> np.ndarray:
        return np.exp(np.interp(t, self.timesteps, self.log_sigmas))

    def sigma_to_t(self, sigma) -> np.ndarray:
        return np.interp(np.log(sigma), self.log_sigmas, self.timesteps)


def _zero_ended(sigmas) -> np.ndarray:
    return np.append(np.asarray(sigmas, dtype=np.float64), 0.0)


def uniform(n: int, model: ModelSigmas) -> np.ndarray:
    """Timesteps evenly spaced from the last to the first (k-diffusion `DiscreteSchedule.get_sigmas`)."""
    return _zero_ended(model.t_to_sigma(np.linspace(model.timesteps[-1], 0, n)))


def karras(n: int, model: ModelSigmas, rho: float = KARRAS_RHO) -> np.ndarray:
    """Evenly spaced in sigma^(1/rho) (Karras et al. 2022, "Elucidating the design space…", eq. 5)."""
    ramp = np.linspace(0, 1, n)
    top, bottom = model.sigma_max ** (1 / rho), model.sigma_min ** (1 / rho)
    return _zero_ended((top + ramp * (bottom - top)) ** rho)


def exponential(n: int, model: ModelSigmas) -> np.ndarray:
    """Evenly spaced in log sigma (k-diffusion `get_sigmas_exponential`)."""
    return _zero_ended(np.exp(np.linspace(np.log(model.sigma_max), np.log(model.sigma_min), n)))


def polyexponential(n: int, model: ModelSigmas, rho: float = POLYEXPONENTIAL_RHO) -> np.ndarray:
    """Log sigma a polynomial of degree rho in the step (k-diffusion `get_sigmas_polyexponential`)."""
    ramp = np.linspace(1, 0, n) ** rho
    low, high = np.log(model.sigma_min), np.log(model.sigma_max)
    return _zero_ended(np.exp(ramp * (high - low) + low))


def sgm_uniform(n: int, model: ModelSigmas) -> np.ndarray:
    """n + 1 timesteps evenly spaced from sigma_max to sigma_min, the last dropped (Stability's SGM "uniform")."""
    t = np.linspace(model.sigma_to_t(model.sigma_max), model.sigma_to_t(model.sigma_min), n + 1)[:-1]
    return _zero_ended(model.t_to_sigma(t))


def kl_optimal(n: int, model: ModelSigmas) -> np.ndarray:
    """Evenly spaced in arctan(sigma), ending at sigma_min (Sabour et al. 2024, arXiv:2404.14507, §3.1)."""
    share = np.arange(n + 1) / n
    return np.tan(share * np.arctan(model.sigma_min) + (1 - share) * np.arctan(model.sigma_max))


def align_your_steps(n: int, model: ModelSigmas, family: str = "sd1") -> np.ndarray:
    """NVIDIA's optimised 10-step schedule, log-linearly resampled to n (Sabour et al. 2024, arXiv:2404.14507)."""
    table = np.array(AYS_SDXL if family == "sdxl" else AYS_SD1)
    if n == len(table):
        return _zero_ended(table)
    # A1111 interpolates log sigma over [0, 1] with the table reversed (rising), then reverses back.
    rising = np.log(table[::-1])
    resampled = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), rising)
    return _zero_ended(np.exp(resampled)[::-1])


def simple(n: int, model: ModelSigmas) -> np.ndarray:
    """Every (T / n)-th model sigma from the top, truncating the index (ComfyUI's "simple", as in A1111)."""
    stride = len(model.sigmas) / n
    return _zero_ended([model.sigmas[-(1 + int(i * stride))] for i in range(n)])


def normal(n: int, model: ModelSigmas) -> np.ndarray:
    """n timesteps evenly spaced from sigma_max's to sigma_min's (ComfyUI's "normal", as in A1111)."""
    t = np.linspace(model.sigma_to_t(model.sigma_max), model.sigma_to_t(model.sigma_min), n)
    return _zero_ended(model.t_to_sigma(t))


def ddim(n: int, model: ModelSigmas) -> np.ndarray:
    """The model sigmas at t = 1, 1 + T // n, … (CompVis DDIM's uniform discretisation, as in A1111).

    Like A1111, a step count that does not divide T gives one sigma more than n (T = 1000, n = 7: 8 steps)."""
    return _zero_ended(model.sigmas[1 :: max(len(model.sigmas) // n, 1)][::-1])


def beta(n: int, model: ModelSigmas, a: float = BETA_ALPHA, b: float = BETA_BETA) -> np.ndarray:
    """Sigmas at the Beta(a, b) quantiles of evenly spaced levels (Lee et al. 2024, arXiv:2407.12173; A1111's form,
    linear in sigma between sigma_min and sigma_max)."""
    from scipy import stats

    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), a, b)
    return _zero_ended(model.sigma_min + quantiles * (model.sigma_max - model.sigma_min))


@dataclass(frozen=True)
class ScheduleType:
    """One A1111 schedule type. `sigmas` is None for Automatic (the sampler's own choice)."""

    name: str
    label: str
    sigmas: Callable[..., np.ndarray] | None
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0  # as A1111's /sdapi/v1/schedulers reports it
    needs_model_sigmas: bool = False  # reads the model's sigma table, not just its range (A1111's need_inner_model)

    @property
    def ends_at_zero(self) -> bool:
        return self.name != "kl_optimal"


SCHEDULE_TYPES: dict[str, ScheduleType] = {s.label: s for s in (
    ScheduleType("automatic", "Automatic", None),
    ScheduleType("uniform", "Uniform", uniform, needs_model_sigmas=True),
    ScheduleType("karras", "Karras", karras, default_rho=KARRAS_RHO),
    ScheduleType("exponential", "Exponential", exponential),
    ScheduleType("polyexponential", "Polyexponential", polyexponential, default_rho=POLYEXPONENTIAL_RHO),
    ScheduleType("sgm_uniform", "SGM Uniform", sgm_uniform, aliases=("SGMUniform",), needs_model_sigmas=True),
    ScheduleType("kl_optimal", "KL Optimal", kl_optimal),
    ScheduleType("align_your_steps", "Align Your Steps", align_your_steps),
    ScheduleType("simple", "Simple", simple, needs_model_sigmas=True),
    ScheduleType("normal", "Normal", normal, needs_model_sigmas=True),
    ScheduleType("ddim", "DDIM", ddim, needs_model_sigmas=True),
    ScheduleType("beta", "Beta", beta, needs_model_sigmas=True),
)}


def name_key(name: str) -> str:
    """How names are compared: case, underscores and repeated spaces don't matter."""
    return " ".join(name.lower().replace("_", " ").split())


_BY_KEY = {name_key(spelling): s.label for s in SCHEDULE_TYPES.values() for spelling in (s.label, s.name, *s.aliases)}


def schedule_spellings() -> dict[str, str]:
    """Every accepted spelling (compared with `name_key`) → the label it means."""
    return dict(_BY_KEY)


def find_schedule_type(name: str) -> str:
    """The label of a schedule type given by label, name or alias, ignoring case; ValueError lists the labels."""
    label = _BY_KEY.get(name_key(name))
    if label is None:
        raise ValueError(f"unknown schedule type {name!r}; valid types: {', '.join(SCHEDULE_TYPES)}")
    return label


@dataclass(frozen=True)
class SigmaSchedule:
    """A schedule type bound to a model family and a sampler's habit: called with (steps, alphas_cumprod)."""

    label: str
    family: str = "sd1"
    discard_penultimate: bool = False  # DPM2, DPM2 a, DPM++ 3M SDE: one sigma more, the next-to-last dropped

    def __call__(self, steps: int, alphas_cumprod) -> np.ndarray:
        schedule = SCHEDULE_TYPES[self.label]
        if schedule.sigmas is None:
            raise ValueError("Automatic is not a sigma schedule; resolve it for the sampler first")
        model = ModelSigmas(alphas_cumprod)
        n = steps + 1 if self.discard_penultimate else steps
        if schedule.name == "align_your_steps":
            sigmas = align_your_steps(n, model, self.family)
        else:
            sigmas = schedule.sigmas(n, model)
        return np.delete(sigmas, -2) if self.discard_penultimate else sigmas
