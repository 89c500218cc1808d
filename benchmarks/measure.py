"""Measuring tools for the benchmark: peak memory, timed pipeline calls, machine description."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

GiB = 2**30


class PeakRSS:
    """Samples this process's resident set (/proc/self/statm) every 5 ms; `reset()` starts a new window.
    ru_maxrss can't be reset, so one process can't measure several configurations with it."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current(self) -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * self._page
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def reset(self) -> None:
        self.peak = self.current()

    def close(self) -> None:
        self._stop.set()


def release_memory() -> None:
    """Give freed memory back to the OS so the next configuration's RSS starts low."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class CallTiming:
    total_s: float
    step_s: float  # median seconds per UNet call (loop iteration), first one excluded
    calls: int  # loop iterations measured
    planned_calls: int  # loop iterations of the full run (len(scheduler.timesteps))
    first_step_s: float
    images: list = field(default_factory=list)

    @property
    def fixed_s(self) -> float:
        """Everything but the denoising steps: text encoding, VAE decode, image conversion."""
        return max(self.total_s - self.first_step_s - self.step_s * (self.calls - 1), 0.0)

    @property
    def per_run_s(self) -> float:
        """The whole run: measured, or extrapolated from `calls` measured steps to `planned_calls`."""
        return self.fixed_s + self.step_s * self.planned_calls


def timed_call(pipe, *, device: str, steps: int, batch: int = 1, stop_after: int | None = None, size: int | None = None,
               seed: int = 0, prompt: str = "a photograph of an astronaut riding a horse", **kwargs) -> CallTiming:
    """One pipeline call, timing every UNet call through `callback_on_step_end`. With `stop_after`, the loop is
    interrupted after that many calls (diffusers then skips the rest and still decodes), so the per-step and
    fixed costs of a 50-step image can be measured with a few steps."""
    marks: list[float] = []

    def on_step(pipeline, index, timestep, kw):
        sync(device)
        marks.append(time.perf_counter())
        if stop_after is not None and index + 1 >= stop_after:
            pipeline._interrupt = True
        return kw

    generator = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    sync(device)
    started = time.perf_counter()
    out = pipe(prompt=[prompt] * batch, num_inference_steps=steps, generator=generator, callback_on_step_end=on_step,
               height=size, width=size, output_type="pil", **kwargs)
    sync(device)
    total = time.perf_counter() - started
    pipe._interrupt = False
    planned = len(pipe.scheduler.timesteps)
    intervals = np.diff(marks) if len(marks) > 1 else np.array([total])
    return CallTiming(total_s=total, step_s=float(np.median(intervals)), calls=len(marks), planned_calls=planned,
                      first_step_s=marks[0] - started if marks else 0.0, images=list(out.images))


def median_of(fn, repeats: int, key=lambda r: r.total_s):
    """Run `fn` `repeats` times; the result with the median `key` (total seconds)."""
    runs = [fn() for _ in range(repeats)]
    return sorted(runs, key=key)[len(runs) // 2]


def pixel_diff(a, b) -> dict[str, float]:
    """Mean and max absolute difference of two PIL images, in 0..255 levels."""
    x = np.asarray(a, dtype=np.float32)
    y = np.asarray(b, dtype=np.float32)
    d = np.abs(x - y)
    return {"mean": round(float(d.mean()), 3), "max": round(float(d.max()), 1)}


CHILD_RESULT = "CHILD_RESULT "  # how a benchmark's child process prints its one JSON result line


def child_result(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run a benchmark's child process and return the JSON of its last CHILD_RESULT line; SystemExit with the
    child's stderr when it printed none."""
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_RESULT)]
    if not lines:
        raise SystemExit(f"{Path(command[1]).name if len(command) > 1 else command[0]} failed (rc {proc.returncode}):"
                         f"\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(CHILD_RESULT))


def peak_rss_bytes() -> int:
    """Peak resident bytes of this whole process (VmHWM in /proc/self/status: its memory map's high-water mark,
    which `/proc/self/clear_refs` can reset, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine(device: str) -> dict[str, str]:
    import diffusers
    import transformers

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from sdart.speed.device import cpu_flags

    flags = sorted(cpu_flags() & {"avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx2"})
    info = {
        "cpu": f"{cpu}, {os.cpu_count()} cores ({', '.join(flags)})",
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.0f} GiB",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch threads": str(torch.get_num_threads()),
        "load average at start": load_average(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / GiB:.0f} GiB"
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


