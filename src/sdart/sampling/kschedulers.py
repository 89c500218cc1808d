"""diffusers schedulers that step on sdart's sigma schedules, and the k-diffusion samplers diffusers lacks.

`SigmaScheduleMixin` feeds a schedule (`sdart.sampling.schedules.SigmaSchedule`, set as `scheduler.sigma_schedule`)
through a scheduler's Karras path: with `use_karras_sigmas=True` the scheduler calls `_convert_to_karras` once in
`set_timesteps` and lays out everything else (timesteps, interleaved second-order sigmas, multistep history) from
what it returns, so returning sdart's sigmas there makes every such scheduler step on them (diffusers 0.42; a check
after `set_timesteps` fails loudly if that ever stops being true). Schedulers without that path get their own
`set_timesteps` (Euler a, LCM).
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_dpmsolver_sde import DPMSolverSDEScheduler
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from sdart.sampling.schedules import ModelSigmas, SigmaSchedule


def _alphas_cumprod(scheduler) -> np.ndarray:
    return np.asarray(scheduler.alphas_cumprod.cpu(), dtype=np.float64)


class SigmaScheduleMixin:
    """Steps on `sigma_schedule` (steps → sigmas) instead of the scheduler's own spacing, via its Karras path."""

    sigma_schedule: SigmaSchedule | None = None
    ends_at_sigma_min = False  # its final_sigmas_type "sigma_min" is the model's smallest sigma (KL Optimal's end)

    @classmethod
    def schedule_options(cls, ends_at_zero: bool) -> dict:
        """Constructor options that route `set_timesteps` through the Karras path; the initial noise is then
        scaled by the first sigma exactly ("linspace" spacing), as k-diffusion scales it."""
        options = {"use_karras_sigmas": True, "timestep_spacing": "linspace"}
        if "final_sigmas_type" in inspect.signature(cls.__init__).parameters:
            options["final_sigmas_type"] = "sigma_min" if not ends_at_zero and cls.ends_at_sigma_min else "zero"
        return options

    _planned_sigmas: np.ndarray | None = None  # set only while set_timesteps runs

    def set_timesteps(self, num_inference_steps=None, device=None, *args, **kwargs):
        if self.sigma_schedule is None or num_inference_steps is None:
            return super().set_timesteps(num_inference_steps, device, *args, **kwargs)
        planned = self.sigma_schedule(num_inference_steps, _alphas_cumprod(self))
        self._planned_sigmas = planned
        try:
            super().set_timesteps(len(planned) - 1, device, *args, **kwargs)
        finally:
            self._planned_sigmas = None
        if not np.isclose(float(self.sigmas[0]), planned[0], rtol=1e-4):
            raise RuntimeError(f"{type(self).__name__} did not step on sdart's sigmas: diffusers' Karras path changed")

    def _convert_to_karras(self, in_sigmas, num_inference_steps=None) -> np.ndarray:
        if self._planned_sigmas is None:  # e.g. a set_timesteps in the parent's constructor
            steps = {} if num_inference_steps is None else {"num_inference_steps": num_inference_steps}
            return super()._convert_to_karras(in_sigmas=in_sigmas, **steps)
        return self._planned_sigmas[:-1].copy()  # the scheduler appends the final sigma itself


class EulerOnSigmas(SigmaScheduleMixin, EulerDiscreteScheduler):
    """Euler (k-diffusion sample_euler) on sdart's sigmas."""

    ends_at_sigma_min = True


class LMSOnSigmas(SigmaScheduleMixin, LMSDiscreteScheduler):
    """Linear multistep (k-diffusion sample_lms) on sdart's sigmas."""


class HeunOnSigmas(SigmaScheduleMixin, HeunDiscreteScheduler):
    """Heun (k-diffusion sample_heun) on sdart's sigmas."""


class DPM2OnSigmas(SigmaScheduleMixin, KDPM2DiscreteScheduler):
    """DPM2 (k-diffusion sample_dpm_2) on sdart's sigmas."""


class DPM2AncestralOnSigmas(SigmaScheduleMixin, KDPM2AncestralDiscreteScheduler):
    """DPM2 a (k-diffusion sample_dpm_2_ancestral) on sdart's sigmas."""


class DPMSolverMultistepOnSigmas(SigmaScheduleMixin, DPMSolverMultistepScheduler):
    """DPM++ 2M / 2M SDE (k-diffusion sample_dpmpp_2m, sample_dpmpp_2m_sde) on sdart's sigmas."""

    ends_at_sigma_min = True


class UniPCOnSigmas(SigmaScheduleMixin, UniPCMultistepScheduler):
    """UniPC on sdart's sigmas, down to 0 with the bh2 variant: A1111's bh1 (its UniPC ends at sigma_min, on its
    own grid) turns a last step to sigma 0, an infinite log-SNR step, into NaNs."""

    @classmethod
    def schedule_options(cls, ends_at_zero: bool) -> dict:
        return super().schedule_options(ends_at_zero) | {"solver_type": "bh2"}


class EulerAncestralOnSigmas(EulerAncestralDiscreteScheduler):
    """Ancestral Euler, eta 1 (k-diffusion sample_euler_ancestral), on sdart's sigmas: diffusers' has no sigma option."""

    sigma_schedule: SigmaSchedule | None = None

    @classmethod
    def schedule_options(cls, ends_at_zero: bool) -> dict:
        return {"timestep_spacing": "linspace"}  # init_noise_sigma = the first sigma, as in k-diffusion

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        if self.sigma_schedule is None:
            return super().set_timesteps(num_inference_steps, device)
        alphas_cumprod = _alphas_cumprod(self)
        sigmas = self.sigma_schedule(num_inference_steps, alphas_cumprod)
        # the same state the parent's set_timesteps leaves: n timesteps (model time of each sigma), n + 1 sigmas
        self.num_inference_steps = len(sigmas) - 1
        timesteps = ModelSigmas(alphas_cumprod).sigma_to_t(sigmas[:-1])
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device=device)
        self.sigmas = torch.from_numpy(sigmas.astype(np.float32))
        self._step_index = None
        self._begin_index = None


class LCMOnSigmas(LCMScheduler):
    """LCM multistep sampling on the distillation timesteps nearest sdart's sigmas (as A1111's LCM denoiser
    quantises to them)."""

    sigma_schedule: SigmaSchedule | None = None

    @classmethod
    def schedule_options(cls, ends_at_zero: bool) -> dict:
        return {}

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None, timesteps=None,
                      strength: float = 1.0):
        if self.sigma_schedule is None or timesteps is not None:
            return super().set_timesteps(num_inference_steps, device, original_inference_steps, timesteps, strength)
        alphas_cumprod = _alphas_cumprod(self)
        sigmas = self.sigma_schedule(num_inference_steps, alphas_cumprod)
        original = original_inference_steps or self.config.original_inference_steps
        grid = np.arange(1, original + 1) * (self.config.num_train_timesteps // original) - 1  # LCM's timesteps
        log_grid = ModelSigmas(alphas_cumprod).log_sigmas[grid]
        nearest = grid[np.abs(np.log(sigmas[:-1])[:, None] - log_grid[None, :]).argmin(axis=1)]  # the last is the end
        # LCM needs strictly falling timesteps: two sigmas nearest the same one step once (only past ~50 steps)
        snapped = [int(t) for i, t in enumerate(nearest) if i == 0 or t < nearest[i - 1]]
        return super().set_timesteps(None, device, original, snapped, strength)


class DPMSolver2SAncestralScheduler(SigmaScheduleMixin, KDPM2AncestralDiscreteScheduler):
    """Ancestral DPM-Solver++(2S) (k-diffusion sample_dpmpp_2s_ancestral): DPM2 a's steps, whose midpoint is
    already the 2S one (halfway to sigma_down in log sigma), with the second stage an exponential-integrator step
    from the step's start using the midpoint's denoised picture."""

    def step(self, model_output, timestep, sample, generator=None, return_dict: bool = True):
        if self.step_index is None:
            self._init_step_index(timestep)
        if self.state_in_first_order:  # Euler to the midpoint (= DPM-Solver++ first order there), or to 0 at the end
            return super().step(model_output, timestep, sample, generator, return_dict)
        i = self.step_index - 1
        sigma, sigma_mid = self.sigmas[i], self.sigmas_interpol[i]
        sigma_up, sigma_down = self.sigmas_up[i], self.sigmas_down[i]
        if self.config.prediction_type == "epsilon":
            denoised = sample - sigma_mid * model_output
        elif self.config.prediction_type == "v_prediction":
            denoised = model_output * (-sigma_mid / (sigma_mid**2 + 1) ** 0.5) + sample / (sigma_mid**2 + 1)
        else:
            raise ValueError(f"prediction_type {self.config.prediction_type!r} is not supported by DPM++ 2S a")
        start, self.sample = self.sample, None
        # x' = (σ_down/σ)·x + (1 − σ_down/σ)·D(x_mid, σ_mid): written as a step along (x − D)/σ
        prev_sample = start + (start - denoised) / sigma * (sigma_down - sigma)
        noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                             generator=generator)
        prev_sample = prev_sample + noise * sigma_up
        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return KDPM2AncestralDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)


class DPMSolver3MSDEScheduler(SigmaScheduleMixin, DPMSolverMultistepScheduler):
    """SDE-DPM-Solver++(3M) as k-diffusion's sample_dpmpp_3m_sde (eta 1): diffusers 0.42's third-order SDE step
    gives D2 the coefficient φ₃ − 1 instead of −φ₃, so the step is recomputed here (its second-order start is
    diffusers' "heun" SDE step, which matches k-diffusion's)."""

    ends_at_sigma_min = True

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kwargs):
        if self.config.algorithm_type != "sde-dpmsolver++":
            return super().multistep_dpm_solver_third_order_update(model_output_list, *args, sample=sample,
                                                                    noise=noise, **kwargs)
        i = self.step_index
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(self.sigmas[i + 1])
        lambdas = [torch.log(a) - torch.log(s) for a, s in
                   (self._sigma_to_alpha_sigma_t(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2))]
        _, sigma_s0 = self._sigma_to_alpha_sigma_t(self.sigmas[i])
        h, h_1, h_2 = lambdas[0] - lambdas[1], lambdas[1] - lambdas[2], lambdas[2] - lambdas[3]
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        r0, r1 = h_1 / h, h_2 / h
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        h_eta = 2 * h  # eta 1
        phi_2 = torch.expm1(-h_eta) / h_eta + 1
        phi_3 = phi_2 / h_eta - 0.5
        return (sigma_t / sigma_s0 * torch.exp(-h)) * sample + alpha_t * (
            -torch.expm1(-h_eta) * m0 + phi_2 * d1 - phi_3 * d2) + sigma_t * torch.sqrt(-torch.expm1(-h_eta)) * noise


class SeededDPMSolverSDEScheduler(SigmaScheduleMixin, DPMSolverSDEScheduler):
    """DPM++ SDE (diffusers' port of k-diffusion sample_dpmpp_sde) with its Brownian tree seeded from the run's
    generators, one tree per image as A1111 seeds one per image seed, so that a seed gives the same picture."""

    def step(self, model_output, timestep, sample, generator=None, return_dict: bool = True, s_noise: float = 1.0):
        if self.noise_sampler is None:  # the first step of a run: the tree is built in the parent's step
            self.noise_sampler_seed = _tree_seeds(generator, len(sample))
        with warnings.catch_warnings():
            # the tree spans [sigma_min, sigma_max] in float32; the last step asks from float64's sigma_min, a hair
            # below it, and torchsde warns (and clamps)
            warnings.filterwarnings("ignore", message="Should have ta>=t0", category=UserWarning)
            return super().step(model_output, timestep, sample, return_dict=return_dict, s_noise=s_noise)


def _tree_seeds(generator, batch: int) -> list[int] | None:
    """One seed per image, drawn from that image's generator (or `batch` from a single one)."""
    if generator is None:
        return None
    generators = generator if isinstance(generator, list) else [generator] * batch
    return [int(torch.randint(0, 2**63 - 1, (), generator=g, device=g.device)) for g in generators]


# The class sdart runs for a diffusers scheduler (or sdart sampler class) name when it steps on sdart's sigmas.
ON_SIGMAS: dict[str, type] = {
    "EulerDiscreteScheduler": EulerOnSigmas,
    "EulerAncestralDiscreteScheduler": EulerAncestralOnSigmas,
    "LMSDiscreteScheduler": LMSOnSigmas,
    "HeunDiscreteScheduler": HeunOnSigmas,
    "KDPM2DiscreteScheduler": DPM2OnSigmas,
    "KDPM2AncestralDiscreteScheduler": DPM2AncestralOnSigmas,
    "DPMSolverMultistepScheduler": DPMSolverMultistepOnSigmas,
    "UniPCMultistepScheduler": UniPCOnSigmas,
    "LCMScheduler": LCMOnSigmas,
    "DPMSolver2SAncestralScheduler": DPMSolver2SAncestralScheduler,
    "DPMSolver3MSDEScheduler": DPMSolver3MSDEScheduler,
    "SeededDPMSolverSDEScheduler": SeededDPMSolverSDEScheduler,
}
