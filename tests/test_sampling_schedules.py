"""A1111's schedule types: the sigmas each computes, and every scheduler stepping on exactly those sigmas.

The expected values are worked out by hand from the formulas' sources (named per test) on a toy model whose noise
levels are σ_t = 0.1 · 2^t for its 5 training timesteps t = 0…4: log σ is linear in t there, so timesteps evenly
spaced in t are evenly spaced in log σ, and the model's sigma_min = 0.1, sigma_max = 1.6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sdart.sampling.build import make_scheduler
from sdart.sampling.samplers import SAMPLERS, effective_schedule, find_sampler
from sdart.sampling.schedules import AYS_SD1, AYS_SDXL, SCHEDULE_TYPES, ModelSigmas, SigmaSchedule, find_schedule_type

TOY_SIGMAS = 0.1 * 2.0 ** np.arange(5)  # 0.1, 0.2, 0.4, 0.8, 1.6
TOY_CUMPROD = 1 / (1 + TOY_SIGMAS**2)  # σ² = (1 − ᾱ)/ᾱ
# The same model as a diffusers scheduler config: betas whose running product is TOY_CUMPROD.
TOY_CONFIG = {"num_train_timesteps": 5, "prediction_type": "epsilon",
              "trained_betas": (1 - TOY_CUMPROD / np.concatenate([[1.0], TOY_CUMPROD[:-1]])).tolist()}
SD15_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1}

KARRAS_MID = 0.458449  # ((1.6^(1/7) + 0.1^(1/7)) / 2)^7: Karras et al. 2022 eq. 5, rho 7, halfway along the ramp
KL_MID = 0.621298  # tan((atan 1.6 + atan 0.1) / 2): halfway in arctan sigma (arXiv:2404.14507 §3.1)

EXPECTED = [
    # k-diffusion DiscreteSchedule.get_sigmas: t = 4, 2, 0 → σ = 1.6, 0.4, 0.1, then 0
    ("Uniform", 3, [1.6, 0.4, 0.1, 0]),
    # t = 4, 8/3, 4/3, 0: σ = 0.1·2^(8/3) = 0.634960, 0.1·2^(4/3) = 0.251984
    ("Uniform", 4, [1.6, 0.634960, 0.251984, 0.1, 0]),
    ("Karras", 3, [1.6, KARRAS_MID, 0.1, 0]),
    # evenly spaced in log σ from 1.6 to 0.1 in 4 intervals: halving each time
    ("Exponential", 5, [1.6, 0.8, 0.4, 0.2, 0.1, 0]),
    ("Polyexponential", 5, [1.6, 0.8, 0.4, 0.2, 0.1, 0]),  # rho 1 (A1111's default) is the exponential schedule
    # SGM uniform: t = linspace(4, 0, n + 1) without its last point: 4, 3, 2, 1
    ("SGM Uniform", 4, [1.6, 0.8, 0.4, 0.2, 0]),
    ("SGM Uniform", 3, [1.6, 0.634960, 0.251984, 0]),
    # KL optimal (A1111 1.10): n + 1 points evenly spaced in arctan σ, ending at sigma_min (no 0)
    ("KL Optimal", 2, [1.6, KL_MID, 0.1]),
    # simple: model sigmas at index −(1 + int(i·T/n)); T/n = 5/3: −1, −2, −4 → 1.6, 0.8, 0.2
    ("Simple", 3, [1.6, 0.8, 0.2, 0]),
    ("Simple", 2, [1.6, 0.4, 0]),  # T/n = 2.5: −1, −3
    # normal: t = linspace(t(σmax), t(σmin), n) = 4, 2, 0 (the same as Uniform on a plain model)
    ("Normal", 3, [1.6, 0.4, 0.1, 0]),
    # DDIM: model sigmas at t = 1, 1 + T//n, … reversed; T//2 = 2: t = 1, 3
    ("DDIM", 2, [0.8, 0.2, 0]),
    # T//3 = 1: t = 1, 2, 3, 4: four sigmas for three steps, as in A1111
    ("DDIM", 3, [1.6, 0.8, 0.4, 0.2, 0]),
    # Beta(0.6, 0.6) quantiles of 1, 0.5, 0 are 1, 0.5 (symmetric), 0; σ = 0.1 + q·(1.6 − 0.1)
    ("Beta", 3, [1.6, 0.85, 0.1, 0]),
]


@pytest.mark.parametrize("label, steps, expected", EXPECTED, ids=[f"{e[0]}-{e[1]}" for e in EXPECTED])
def test_schedule_sigmas_follow_the_formula(label, steps, expected):
    sigmas = SigmaSchedule(label)(steps, TOY_CUMPROD)
    np.testing.assert_allclose(sigmas, expected, rtol=1e-5, atol=1e-9)


def test_align_your_steps_resamples_nvidias_tables_per_family():
    """AYS' 10-step tables (arXiv:2404.14507; NVIDIA's how-to page) at 11 sigmas; 5 steps pick every other entry
    (the log-linear resampling lands on the table's own points), 20 steps put geometric means in between."""
    np.testing.assert_allclose(SigmaSchedule("Align Your Steps")(11, TOY_CUMPROD), [*AYS_SD1, 0])
    np.testing.assert_allclose(SigmaSchedule("Align Your Steps", "sdxl")(11, TOY_CUMPROD), [*AYS_SDXL, 0])
    np.testing.assert_allclose(SigmaSchedule("Align Your Steps")(6, TOY_CUMPROD),
                               [14.615, 3.861, 1.886, 0.963, 0.399, 0.029, 0], rtol=1e-9)
    np.testing.assert_allclose(SigmaSchedule("Align Your Steps", "sdxl")(6, TOY_CUMPROD),
                               [14.615, 3.771, 1.342, 0.555, 0.234, 0.029, 0], rtol=1e-9)
    between = SigmaSchedule("Align Your Steps", "sd2")(21, TOY_CUMPROD)  # SD 2 takes the SD 1 table, as in A1111
    assert between[1] == pytest.approx(9.727904, rel=1e-6)  # √(14.615 · 6.475)
    assert between[2] == pytest.approx(6.475, rel=1e-9)


def test_discarding_the_penultimate_sigma():
    """A1111's DPM2 / DPM2 a / DPM++ 3M SDE: the schedule for n + 1 steps with its next-to-last sigma dropped."""
    np.testing.assert_allclose(SigmaSchedule("Karras", discard_penultimate=True)(2, TOY_CUMPROD), [1.6, KARRAS_MID, 0],
                               rtol=1e-5)


def test_sd15_noise_range():
    """SD 1.x's scaled-linear betas: σ_min = √(β₀ / (1 − β₀)) with β₀ = 0.00085, and σ_max the 14.615 that AYS'
    tables start from (A1111's settings call them ~0.03 and ~14.6)."""
    scheduler = make_scheduler(find_sampler("Euler"), SD15_CONFIG)
    model = ModelSigmas(scheduler.alphas_cumprod)
    assert model.sigma_min == pytest.approx(math.sqrt(0.00085 / 0.99915), rel=1e-4)  # ᾱ is float32 in diffusers
    assert model.sigma_max == pytest.approx(14.615, abs=1e-3)
    assert model.sigma_to_t(model.t_to_sigma(np.array([0.0, 412.5, 999.0]))) == pytest.approx([0, 412.5, 999], abs=1e-6)


@pytest.mark.parametrize("spelling, label", [("karras", "Karras"), ("SGM Uniform", "SGM Uniform"),
                                             ("sgm_uniform", "SGM Uniform"), ("SGMUniform", "SGM Uniform"),
                                             ("align_your_steps", "Align Your Steps"), ("KL OPTIMAL", "KL Optimal"),
                                             ("automatic", "Automatic")])
def test_schedule_types_by_label_name_or_alias(spelling, label):
    assert find_schedule_type(spelling) == label


def test_unknown_schedule_type_lists_the_labels():
    with pytest.raises(ValueError, match="valid types: Automatic, Uniform, Karras, Exponential, Polyexponential, "
                                         "SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal, DDIM, Beta"):
        find_schedule_type("Quadratic")


def planned_and_stepped(sampler, label: str, steps: int, config=TOY_CONFIG):
    """The sigmas sdart planned for a pair and those the built scheduler steps through (second-order schedulers
    interleave each sigma twice)."""
    scheduler = make_scheduler(sampler, config, label)
    scheduler.set_timesteps(steps)
    planned = SigmaSchedule(effective_schedule(sampler, label), "sd1", sampler.discard_penultimate_sigma)(
        steps, scheduler.alphas_cumprod)
    return planned, torch.unique_consecutive(scheduler.sigmas).numpy(), scheduler


ON_SIGMAS = [s for s in SAMPLERS if s.takes_schedules and s.name != "LCM"]


@pytest.mark.parametrize("sampler", ON_SIGMAS, ids=[s.name for s in ON_SIGMAS])
@pytest.mark.parametrize("label", ["Automatic", "Karras", "Simple", "KL Optimal"])
def test_every_scheduler_steps_on_the_planned_sigmas(sampler, label):
    if label == "Automatic" and sampler.automatic == "Automatic":
        pytest.skip("on its own grid")  # DDIM, UniPC: their scheduler's timesteps (test below)
    planned, stepped, scheduler = planned_and_stepped(sampler, label, 3)
    np.testing.assert_allclose(stepped[:-1], planned[:-1], rtol=1e-5)
    # The end: KL Optimal's sigma_min where the scheduler can end there, else 0.
    if label == "KL Optimal" and getattr(scheduler, "ends_at_sigma_min", True):
        assert stepped[-1] == pytest.approx(planned[-1], rel=1e-5)
    else:
        assert stepped[-1] == 0.0
    # the model is called at each sigma's own timestep: t = log2(σ / 0.1) = 4 for the first, sigma_max
    assert float(scheduler.timesteps[0]) == pytest.approx(4, abs=1e-4)


def test_kl_optimal_ends_at_sigma_min_where_the_scheduler_can():
    for name in ("Euler", "DPM++ 2M", "DPM++ 3M SDE", "Euler a"):
        planned, stepped, _ = planned_and_stepped(find_sampler(name), "KL Optimal", 3)
        assert stepped[-1] == pytest.approx(0.1) and planned[-1] == pytest.approx(0.1), name


def test_timestep_samplers_keep_their_grid_under_automatic():
    """DDIM and PLMS: A1111's `range(0, 1000, 1000 // steps) + 1` (diffusers' "leading" spacing, offset 1);
    UniPC: A1111's time-uniform steps from t = 999, ending at sigma_min."""
    assert type(make_scheduler(find_sampler("DDIM"), SD15_CONFIG)).__name__ == "DDIMScheduler"
    for name in ("DDIM", "PLMS"):
        scheduler = make_scheduler(find_sampler(name), SD15_CONFIG)
        scheduler.set_timesteps(4)
        assert sorted(set(scheduler.timesteps.tolist()), reverse=True) == [751, 501, 251, 1]
    unipc = make_scheduler(find_sampler("UniPC"), SD15_CONFIG)
    unipc.set_timesteps(4)
    assert unipc.timesteps.tolist() == [999, 749, 500, 250]
    assert float(unipc.sigmas[-1]) == pytest.approx(math.sqrt(0.00085 / 0.99915), rel=1e-4)


def test_ddim_on_a_schedule_type_is_euler_on_its_sigmas():
    """DDIM with eta 0 is Euler in sigma (Song et al. 2021, eq. 14), so DDIM + Karras steps on Karras sigmas."""
    planned, stepped, scheduler = planned_and_stepped(find_sampler("DDIM"), "Karras", 3)
    assert type(scheduler).__name__ == "EulerOnSigmas"
    np.testing.assert_allclose(stepped, planned, rtol=1e-5)


def test_lcm_steps_on_its_distillation_timesteps_nearest_the_schedule():
    """LCM's 50 distillation timesteps are 19, 39, …, 999 (T = 1000); Karras' 4 sigmas on SD 1.5 sit at
    t = 999, 687, 146, 0 (their model times), whose nearest distillation timesteps (in log sigma) are below."""
    scheduler = make_scheduler(find_sampler("LCM"), SD15_CONFIG, "Karras")
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 679, 139, 19]


def test_only_a_fixed_grid_refuses_schedule_types():
    assert [s.name for s in SAMPLERS if not s.takes_schedules] == ["PLMS", "DEIS"]
    with pytest.raises(ValueError, match="fixed timestep grid"):
        make_scheduler(find_sampler("PLMS"), SD15_CONFIG, "Karras")
    assert set(SCHEDULE_TYPES) >= {"Automatic", "Karras"}


def test_each_build_is_a_fresh_scheduler():
    """Built once and copied: one run's stepping state (a step index, a half-done Heun step) never reaches another."""
    first, second = (make_scheduler(find_sampler("Heun"), SD15_CONFIG, "Karras") for _ in range(2))
    first.set_timesteps(3)
    first.step(torch.zeros(1, 4, 2, 2), first.timesteps[0], torch.ones(1, 4, 2, 2))
    second.set_timesteps(5)
    assert first is not second and first.step_index == 1 and second.step_index is None
    assert len(first.timesteps) == 5 and len(second.timesteps) == 9  # 2n − 1 evaluations each
