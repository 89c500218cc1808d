"""sdart's samplers step as A1111's k-diffusion samplers do.

Each reference below is the k-diffusion sampler written out from its algorithm (k-diffusion `sampling.py`,
MIT; Lu et al. 2022 arXiv:2211.01095 for DPM-Solver++), on the same sigmas, with a toy denoiser and the same
noise draws; the scheduler, driven the way a diffusers pipeline drives it, must end on the same latents.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from sdart.sampling.build import make_scheduler
from sdart.sampling.samplers import effective_schedule, find_sampler
from sdart.sampling.schedules import SigmaSchedule

SD15_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "prediction_type": "epsilon"}
SHAPE = (1, 4, 3, 3)


def eps_model(scaled_input: torch.Tensor) -> torch.Tensor:
    """A toy noise predictor of the scaled input x / √(σ² + 1) only, so that rounded timesteps don't matter."""
    return 0.8 * torch.tanh(scaled_input) + 0.1 * scaled_input


def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """k-diffusion's denoiser for an eps model: D(x, σ) = x − σ · eps(x / √(σ² + 1))."""
    return x - sigma * eps_model(x / math.sqrt(sigma**2 + 1))


def start_noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))


def ancestral_step(sigma: float, sigma_next: float) -> tuple[float, float]:
    """k-diffusion get_ancestral_step, eta 1: (sigma_down, sigma_up)."""
    up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


def euler_ancestral(sigmas: list[float]) -> torch.Tensor:
    noise = torch.Generator().manual_seed(0)
    x = start_noise() * sigmas[0]
    for sigma, sigma_next in pairwise(sigmas):
        denoised = denoise(x, sigma)
        down, up = ancestral_step(sigma, sigma_next)
        x = x + (x - denoised) / sigma * (down - sigma)
        x = x + torch.randn(SHAPE, generator=noise) * up  # diffusers draws on the last step too (up = 0 there)
    return x


def dpmpp_2s_ancestral(sigmas: list[float]) -> torch.Tensor:
    noise = torch.Generator().manual_seed(0)
    x = start_noise() * sigmas[0]
    for sigma, sigma_next in pairwise(sigmas):
        denoised = denoise(x, sigma)
        down, up = ancestral_step(sigma, sigma_next)
        if down == 0:
            x = x + (x - denoised) / sigma * (down - sigma)
        else:
            h = math.log(sigma) - math.log(down)
            sigma_mid = math.exp(-(-math.log(sigma) + h / 2))
            x_mid = (sigma_mid / sigma) * x - math.expm1(-h / 2) * denoised
            x = (down / sigma) * x - math.expm1(-h) * denoise(x_mid, sigma_mid)
        if sigma_next > 0:
            x = x + torch.randn(SHAPE, generator=noise) * up
    return x


def dpmpp_multistep(sigmas: list[float], *, sde: bool, order: int, solver: str = "midpoint") -> torch.Tensor:
    """sample_dpmpp_2m (sde False), sample_dpmpp_2m_sde (order 2; midpoint or heun) and sample_dpmpp_3m_sde (order 3,
    whose second step is the heun one)."""
    noise = torch.Generator().manual_seed(0)
    # diffusers' DPM-Solver starts from unit-variance latents: x / √(σ₀² + 1) = noise
    x = start_noise() * math.sqrt(1 + sigmas[0] ** 2)
    history: list[tuple[torch.Tensor, float]] = []  # (denoised, h) of earlier steps
    for sigma, sigma_next in pairwise(sigmas):
        denoised = denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma) - math.log(sigma_next)
        h_eta = 2 * h if sde else h
        x = (sigma_next / sigma) * math.exp(h - h_eta) * x - math.expm1(-h_eta) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if order == 3 and len(history) >= 2:
            (d_1, h_1), (d_2, h_2) = history[-1], history[-2]
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif history:
            d_1, h_1 = history[-1]
            d = (denoised - d_1) / (h_1 / h)
            x = x + (-0.5 * math.expm1(-h_eta) if solver == "midpoint" else phi_2) * d
        if sde:
            x = x + torch.randn(SHAPE, generator=noise) * sigma_next * math.sqrt(-math.expm1(-2 * h))
        history.append((denoised, h))
    return x


def run_scheduler(name: str, schedule: str, steps: int) -> tuple[torch.Tensor, list[float]]:
    """The scheduler's result, driven as a diffusers pipeline drives it, and the sigmas sdart planned."""
    sampler = find_sampler(name)
    scheduler = make_scheduler(sampler, SD15_CONFIG, schedule)
    scheduler.set_timesteps(steps)
    noise = torch.Generator().manual_seed(0)
    x = start_noise() * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(scheduler.scale_model_input(x, t)), t, x, generator=noise).prev_sample
    planned = SigmaSchedule(effective_schedule(sampler, schedule), "sd1", sampler.discard_penultimate_sigma)
    return x, [float(s) for s in planned(steps, scheduler.alphas_cumprod)]


CASES = [
    ("Euler a", "Karras", euler_ancestral),
    ("DPM++ 2S a", "Automatic", dpmpp_2s_ancestral),  # Karras
    ("DPM++ 2S a", "Beta", dpmpp_2s_ancestral),
    ("DPM++ 2M", "Automatic", lambda s: dpmpp_multistep(s, sde=False, order=2)),
    ("DPM++ 2M SDE", "Automatic", lambda s: dpmpp_multistep(s, sde=True, order=2)),  # Exponential
    ("DPM++ 2M SDE Heun", "Karras", lambda s: dpmpp_multistep(s, sde=True, order=2, solver="heun")),
    # Exponential, its penultimate sigma dropped
    ("DPM++ 3M SDE", "Automatic", lambda s: dpmpp_multistep(s, sde=True, order=3, solver="heun")),
    ("DPM++ 3M SDE", "Align Your Steps", lambda s: dpmpp_multistep(s, sde=True, order=3, solver="heun")),
]


@pytest.mark.parametrize("name, schedule, reference", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
@pytest.mark.parametrize("steps", [3, 7])
def test_scheduler_steps_as_k_diffusion(name, schedule, reference, steps):
    result, sigmas = run_scheduler(name, schedule, steps)
    expected = reference(sigmas)
    assert torch.allclose(result, expected, atol=1e-4), float((result - expected).abs().max())


def test_diffusers_own_third_order_sde_step_is_not_k_diffusions():
    """Why DPM++ 3M SDE has its own step: diffusers 0.42's third-order SDE update (the same options, the same
    sigmas) ends elsewhere once a third-order step is taken (7 steps; 3 take none). When this fails, diffusers
    has fixed it and sdart's override can go."""
    from sdart.sampling.kschedulers import DPMSolverMultistepOnSigmas

    sampler = find_sampler("DPM++ 3M SDE")
    stock = DPMSolverMultistepOnSigmas.from_config(SD15_CONFIG, **sampler.options,
                                                   **DPMSolverMultistepOnSigmas.schedule_options(True))
    stock.sigma_schedule = SigmaSchedule("Exponential", "sd1", discard_penultimate=True)
    stock.set_timesteps(7)
    noise = torch.Generator().manual_seed(0)
    x = start_noise()
    for t in stock.timesteps:
        x = stock.step(eps_model(stock.scale_model_input(x, t)), t, x, generator=noise).prev_sample
    ours, sigmas = run_scheduler("DPM++ 3M SDE", "Automatic", 7)
    expected = dpmpp_multistep(sigmas, sde=True, order=3, solver="heun")
    assert torch.allclose(ours, expected, atol=1e-4) and (x - expected).abs().max() > 0.1


def test_dpmpp_sde_noise_comes_from_the_images_generators():
    """DPM++ SDE's Brownian tree is seeded from each image's generator (A1111: from each image's seed): the same
    seed gives the same latents, another seed others, and image i of a batch does not depend on the batch."""

    def run(seeds: list[int]) -> torch.Tensor:
        scheduler = make_scheduler(find_sampler("DPM++ SDE"), SD15_CONFIG)
        scheduler.set_timesteps(3)
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        x = torch.cat([torch.randn(SHAPE, generator=g) for g in generators]) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(eps_model(scheduler.scale_model_input(x, t)), t, x, generator=generators).prev_sample
        return x

    assert torch.equal(run([5]), run([5]))
    assert not torch.allclose(run([5]), run([6]))
    assert torch.allclose(run([5, 6])[1:], run([6]), atol=1e-5)
