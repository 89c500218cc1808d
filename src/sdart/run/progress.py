"""Progress and cancellation of a run: one StepProgress per finished denoising step, checked for a cancel request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class GenerationCancelled(Exception):
    """Raised inside the denoising loop to stop it between two steps."""


@dataclass(frozen=True)
class StepProgress:
    """One finished denoising step. `step`/`total` count within the current batch, over all its passes (first,
    hires, refiner; some samplers, like Heun, take two model calls per step and report each); `iteration` is the
    batch index within `iterations`."""

    step: int
    total: int
    iteration: int
    iterations: int
    elapsed: float  # seconds since generate() started
    it_per_s: float  # steps per second in the current batch
    # The batch's latents after this step, (B, C, h, w): what a live preview is drawn from (sdart.images.preview).
    latents: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        return (self.iteration + self.step / self.total) / self.iterations

    @property
    def eta_s(self) -> float | None:
        return self.elapsed * (1 - self.fraction) / self.fraction if self.fraction > 0 else None


StepCallback = Callable[[StepProgress], None]


class BatchSteps:
    """A batch's step count over its passes. `planned` holds each pass's steps, an estimate until the pass starts
    and its pipeline says how many it takes (Heun and DPM2 report two per step)."""

    def __init__(self, planned: list[int]):
        self.planned = list(planned)
        self.current = 0
        self.done = 0  # steps of the passes before the current one

    def at(self, step_index: int, pass_total: int) -> tuple[int, int]:
        """(step, total) of the batch after step `step_index` of the current pass, which takes `pass_total`."""
        self.planned[self.current] = pass_total
        return self.done + step_index + 1, self.done + sum(self.planned[self.current:])

    def next_pass(self) -> None:
        self.done += self.planned[self.current]
        self.current += 1
Cancel = threading.Event | Callable[[], bool] | None


def cancel_check(cancel: Cancel) -> Callable[[], bool]:
    """A function answering "stop now?" for an Event, a function, or nothing."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def tqdm_callback():
    """A tqdm.auto bar (a widget in Jupyter) and the step callback that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(unit="step", leave=False)

    def on_step(p: StepProgress) -> None:
        bar.total = p.total * p.iterations
        bar.n = p.iteration * p.total + p.step
        bar.refresh()

    return on_step, bar
