#!/usr/bin/env python3
"""Speed and memory of sdart against plain diffusers, on SD 1.5's architecture with random weights.

    python benchmarks/run.py                 # CPU (a few UNet steps per configuration, extrapolated to a full image)
    python benchmarks/run.py --device cuda   # GPU (full runs), SDXL and torch.compile included
    python benchmarks/run.py --quick         # tiny model, seconds: a smoke test of every code path (CI)

Each run writes `results-<device>.json` (`--out` folder, default benchmarks/), then `report.py` rebuilds
RESULTS.md and chart.png from every results file present. All configurations of a run are timed in one
process, one after another, on the same weights; the first call of each is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]  # run from a checkout, installed or not

import torch  # noqa: E402

from measure import (  # noqa: E402
    GiB,
    PeakRSS,
    load_average,
    machine,
    median_of,
    peak_rss_bytes,
    pixel_diff,
    release_memory,
    timed_call,
)

PROMPT = "a photograph of an astronaut riding a horse"


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = args.device
        self.cuda = args.device.startswith("cuda")
        self.rss = PeakRSS()
        self.rows: list[dict] = []
        self.started = time.perf_counter()
        self.reference_image = None
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_file = self.out / f"results-{'quick' if args.quick else ('cuda' if self.cuda else 'cpu')}.json"
        self.meta = {"device": self.device, "quick": args.quick, "machine": machine(self.device),
                     "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M")}

    # --- bookkeeping ------------------------------------------------------------------------------------

    def over_budget(self) -> bool:
        return self.args.budget_s and time.perf_counter() - self.started > self.args.budget_s

    def begin(self):
        release_memory()
        self.rss.reset()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict[str, float]:
        out = {"peak_rss_gib": round(self.rss.peak / GiB, 2)}
        if self.cuda:
            out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
        return out

    def record(self, row: dict) -> None:
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        row["load_avg"] = load_average()
        # A configuration measured again (--append) replaces its old row, in place.
        same = [i for i, old in enumerate(self.rows) if old.get("config") == row.get("config")]
        if same:
            self.rows[same[0]] = row
        else:
            self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def save(self) -> None:
        self.results_file.write_text(json.dumps({**self.meta, "rows": self.rows}, indent=1))

    # --- configurations ---------------------------------------------------------------------------------

    def plain(self, name: str, folder: Path, dtype: torch.dtype, *, batch_sizes=(1,)) -> None:
        """The original way: StableDiffusionPipeline.from_pretrained, PNDM, 50 steps, nothing else."""
        from diffusers import StableDiffusionPipeline

        self.begin()
        t0 = time.perf_counter()
        pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False).to(self.device)
        load_s = time.perf_counter() - t0
        pipe.set_progress_bar_config(disable=True)
        steps = self.args.steps_original
        for batch in batch_sizes:
            timing = self._measure(pipe, steps=steps, batch=batch)
            self.record({"config": name, "path": "diffusers", "dtype": str(dtype).removeprefix("torch."),
                         "sampler": "PNDM", "steps": steps, "batch": batch, "load_s": load_s, **self._row(timing, batch),
                         **self.peak()})
            if self.reference_image is None:
                self.reference_image = timing.images[0]
        del pipe

    def engine(self, name: str, folder: Path, *, sampler: str = "DPM++ 2M Karras", steps: int = 25, batch_sizes=(1,),
               compare_to: str | None = None, **settings) -> dict | None:
        """sdart's path: Engine (loading, speed and memory settings) and Engine.generate."""
        from sdart.engine import Engine
        from sdart.settings import Settings

        if self.args.quick:
            steps = min(steps, 4)
        settings.setdefault("compile", "never")  # eager rows stay eager whatever the user's cache holds
        self.begin()
        engine = Engine(settings=Settings(model=str(folder), device=self.device, **settings))
        pipe = engine.model.pipeline
        row = None
        for batch in batch_sizes:
            fields = dict(prompt=PROMPT, sampler_name=sampler, batch_size=batch, seed=0, progress=False)
            # Warm-up (oneDNN/cuDNN kernel choice, CUDA graphs, allocator), then the measured run(s).
            engine.generate(steps=self.args.warmup_steps, **fields)
            if self.cuda or self.args.quick:
                result = median_of(lambda: engine.generate(steps=steps, **fields), self.args.repeats,
                                   key=lambda r: r.timings["total_s"])
                per_image = result.timings["total_s"] / batch
                measured_steps = steps
            else:
                measured_steps = self.args.steps_cpu
                if settings.get("step_cache"):  # one whole cycle after the first (full) step
                    measured_steps = max(measured_steps, settings["step_cache"] + 1)
                elapsed: list[float] = []
                result = engine.generate(steps=measured_steps, on_step=lambda p: elapsed.append(p.elapsed), **fields)
                # Extrapolate from the measured steps to `steps`. Intervals between step ends are pure UNet steps;
                # the first step (with text encoding before it) is taken as a full step, the rest is fixed cost.
                intervals = [b - a for a, b in zip(elapsed, elapsed[1:])]
                interval = settings.get("step_cache") or 0
                full = max(intervals) if interval else sorted(intervals)[len(intervals) // 2]
                light = min(intervals)
                fixed = result.timings["total_s"] - sum(intervals) - full
                n_full = -(-steps // interval) if interval else steps
                per_image = (fixed + n_full * full + (steps - n_full) * light) / batch
                result.timings.update(fixed_s=fixed, step_s=sum(intervals) / len(intervals))
                result.timings["it_per_s"] = 1 / result.timings["step_s"]
            t = result.timings
            row = {"config": name, "path": "sdart", "dtype": str(engine.dtype).removeprefix("torch."),
                   "sampler": sampler, "steps": steps, "batch": batch, "load_s": engine.load_s,
                   "step_s": t["step_s"], "it_per_s": t["it_per_s"], "fixed_s": t["fixed_s"],
                   "per_image_s": per_image, "images_per_s": 1 / per_image, "measured_steps": measured_steps,
                   "extrapolated": measured_steps != steps,
                   "settings": {k: v for k, v in settings.items() if k not in ("model",)}, **self.peak()}
            if engine.compiled.dispatchers:  # which components ran compiled
                row["compiled_calls"] = {name: d.state.compiled_calls for name, d in engine.compiled.dispatchers.items()}
            state = getattr(getattr(pipe, "unet", None), "_sdart_step_cache", None)
            if state is not None:
                row["step_cache_calls"] = {"full": state.full, "cached": state.cached}
            if batch == 1:
                image = result.images[0]
                if compare_to == "self":
                    self.reference_image = image
                elif compare_to and self.reference_image is not None:
                    row["pixel_diff_vs_default"] = pixel_diff(image, self.reference_image)
            self.record(row)
        del engine, pipe
        return row

    def _measure(self, pipe, *, steps: int, batch: int):
        timed_call(pipe, device=self.device, steps=steps, batch=batch, stop_after=1, size=self.args.size)  # warm-up
        if self.cuda or self.args.quick:
            return median_of(lambda: timed_call(pipe, device=self.device, steps=steps, batch=batch, size=self.args.size),
                             self.args.repeats)
        return timed_call(pipe, device=self.device, steps=steps, batch=batch, stop_after=self.args.steps_cpu,
                          size=self.args.size)

    @staticmethod
    def _row(timing, batch: int) -> dict:
        per_image = timing.per_run_s / batch
        return {"step_s": timing.step_s, "it_per_s": 1 / timing.step_s, "fixed_s": timing.fixed_s,
                "per_image_s": per_image, "images_per_s": 1 / per_image, "measured_steps": timing.calls,
                "extrapolated": timing.calls < timing.planned_calls}


# --- SDXL (GPU) --------------------------------------------------------------------------------------------

def sdxl(bench: Bench) -> None:
    """SDXL base architecture at 1024², 30 Euler steps: plain diffusers fp16 (VAE upcast to fp32 to decode) vs
    sdart's speed settings with the VAE decoding in fp16 (an fp16-safe VAE such as sdxl-vae-fp16-fix) and tiled."""
    from random_models import build_pipeline
    from sdart.speed.options import SpeedOptions, apply_speed

    size, steps = (1024, 30) if not bench.args.quick else (None, 2)
    kind = "sdxl"
    for name, speed, upcast, tiled, batches in (
        ("SDXL plain diffusers fp16", False, True, False, (1, 4)),
        ("SDXL sdart fp16 VAE + tiled decode", True, False, True, (1, 4)),
    ):
        if bench.over_budget():
            return
        bench.begin()
        t0 = time.perf_counter()
        if bench.args.quick:
            from sdart.testing import build_tiny_pipeline

            pipe = build_tiny_pipeline("sdxl").to(bench.device, torch.float16 if bench.cuda else torch.float32)
        else:
            pipe = build_pipeline(kind, device=bench.device, dtype=torch.float16)
        load_s = time.perf_counter() - t0
        pipe.set_progress_bar_config(disable=True)
        if speed:
            apply_speed(pipe, SpeedOptions(), torch.device(bench.device))
        pipe.vae.config.force_upcast = upcast
        if tiled:
            pipe.vae.enable_tiling()
        for batch in batches:
            if bench.over_budget():
                break
            bench.begin()
            timed_call(pipe, device=bench.device, steps=2, batch=batch, size=size)
            if bench.cuda:
                torch.cuda.reset_peak_memory_stats()
            timing = timed_call(pipe, device=bench.device, steps=steps, batch=batch, size=size)
            bench.record({"config": name, "path": "sdart" if speed else "diffusers", "model": "sdxl", "dtype": "float16",
                          "sampler": "Euler", "steps": steps, "batch": batch, "size": size, "build_s": load_s,
                          **Bench._row(timing, batch), **bench.peak()})
        del pipe


# --- compile in fresh processes (cold cache, then warm cache) ----------------------------------------------

def ensure_artifacts(settings, batch: int = 1, size: int | None = None) -> float:
    """Build the compiled UNet and VAE decoder `settings` need for one size and batch (sdart's own build, in its
    child process) if the cache folder lacks them; seconds spent (0 when they were there)."""
    from sdart.speed.builder import Shape, run_build

    started = time.perf_counter()
    events, log_path = run_build(settings, [Shape(size, size, batch)])
    failures = [e for e in events if e["event"] in ("failed", "crashed")]
    if failures:
        raise RuntimeError(f"compile failed: {failures[0].get('error')} (log: {log_path})")
    return time.perf_counter() - started if any(e["event"] == "built" for e in events) else 0.0


def compile_child(args) -> None:
    """A fresh process: load with compile = auto; with a cold cache, build the artifacts first (what
    `--compile always` does); then run and time."""
    t0 = time.perf_counter()
    from sdart.engine import Engine
    from sdart.settings import Settings

    settings = Settings(model=args.folder, device=args.device, compile="auto", cache_dir=args.compile_cache,
                        dtype=args.dtype)
    build_s = ensure_artifacts(settings, size=args.size)
    engine = Engine(settings=settings)
    load_s = time.perf_counter() - t0
    fields = dict(prompt=PROMPT, sampler_name="PNDM", seed=0, progress=False)
    t0 = time.perf_counter()
    engine.generate(steps=args.steps_original, **fields)
    first_s = time.perf_counter() - t0
    runs = [engine.generate(steps=args.steps_original, **fields).timings for _ in range(3)]
    best = sorted(runs, key=lambda t: t["total_s"])[1]
    rows = [{"config": f"sdart {args.dtype} + compiled artifact ({args.compile_label})", "path": "sdart",
             "dtype": args.dtype, "sampler": "PNDM", "steps": args.steps_original, "batch": 1, "build_s": build_s,
             "load_s": load_s, "first_call_s": first_s, "step_s": best["step_s"],
             "it_per_s": best["it_per_s"], "fixed_s": best["fixed_s"], "per_image_s": best["total_s"],
             "images_per_s": 1 / best["total_s"], "compile": engine.compiled.status(),
             "peak_vram_gib": round(torch.cuda.max_memory_allocated() / GiB, 2) if torch.cuda.is_available() else None}]
    print("CHILD_RESULT " + json.dumps(rows), flush=True)


def compile_runs(bench: Bench, folder: Path) -> None:
    """Cold (empty cache folder: build, then run) and warm (the artifacts present), each in a fresh process."""
    import shutil

    cache = Path(bench.args.compile_cache or (bench.out / "compile-cache"))
    shutil.rmtree(cache, ignore_errors=True)
    for label in ("cold", "warm"):
        if bench.over_budget():
            return
        cmd = [sys.executable, __file__, "--child-compile", "--folder", str(folder), "--device", bench.device,
               "--compile-cache", str(cache), "--compile-label", label, "--steps-original", str(bench.args.steps_original),
               "--dtype", "auto"] + (["--size", str(bench.args.size)] if bench.args.size else [])
        started = time.perf_counter()
        timeout = bench.args.compile_timeout_s
        if bench.args.budget_s:  # the soft budget plus two minutes is a hard end for the whole run
            timeout = min(timeout, max(30.0, bench.args.budget_s + 120 - (time.perf_counter() - bench.started)))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            bench.record({"config": f"compiled artifact ({label})", "error": f"timed out after {timeout:.0f} s"})
            return
        lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD_RESULT ")]
        if not lines:
            print(proc.stdout[-3000:], proc.stderr[-5000:], flush=True)
            bench.record({"config": f"compiled artifact ({label})", "error": proc.stderr.strip().splitlines()[-1:]})
            return
        for row in json.loads(lines[-1].removeprefix("CHILD_RESULT ")):
            row["process_s"] = time.perf_counter() - started
            bench.record(row)


def rss_child(args) -> None:
    """Whole-process peak RSS (load included) of one configuration in a fresh process.

    Read from VmHWM, the high-water mark of this process's own memory map. ru_maxrss would not do: Linux keeps it
    across fork + exec, so a child started by a parent that had held the fp32 pipeline reports the parent's peak.
    """
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(settings=Settings(model=args.folder, device="cpu", quantize=args.quantize, memory=args.memory,
                                      compile="never"))
    after_load = peak_rss_bytes()
    engine.generate(prompt=PROMPT, steps=2, seed=0, progress=False)
    peak = peak_rss_bytes()
    settled = PeakRSS().current()  # resident after the run: weights + libraries + allocator caches
    print("CHILD_RESULT " + json.dumps([{"config": f"process peak RSS, quantize={args.quantize}, memory={args.memory}",
                                          "memory": args.memory,
                                          "peak_rss_process_gib": round(peak / GiB, 2),
                                          "peak_rss_at_load_gib": round(after_load / GiB, 2),
                                          "rss_after_run_gib": round(settled / GiB, 2)}]), flush=True)


def rss_runs(bench: Bench, folder: Path) -> None:
    for quantize, memory in (("none", "balanced"), ("int8", "balanced"), ("int8", "low")):
        if bench.over_budget():
            return
        proc = subprocess.run([sys.executable, __file__, "--child-rss", "--folder", str(folder), "--quantize", quantize,
                               "--memory", memory], capture_output=True, text=True, timeout=900)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD_RESULT ")]
        if not lines:
            print(proc.stderr[-3000:], flush=True)
            continue
        for row in json.loads(lines[-1].removeprefix("CHILD_RESULT ")):
            bench.record(row)


# --- the plans ---------------------------------------------------------------------------------------------

def model_folder(args) -> Path:
    if args.quick:
        from sdart.testing import save_tiny_model

        folder = Path(args.out) / "tiny-sd15"
        if not (folder / "model_index.json").is_file():
            save_tiny_model(folder, "sd15")
        return folder
    from random_models import sd15_folder

    return sd15_folder(args.folder, device="cuda" if args.device.startswith("cuda") else "cpu")


def taesd(bench: Bench) -> Path:
    if bench.args.quick:  # the tiny model's latents: a tiny AutoencoderTiny of the same 8× scale
        from diffusers import AutoencoderTiny

        folder = Path(bench.args.out) / "tiny-taesd"
        if not (folder / "config.json").is_file():
            AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                            num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4).save_pretrained(folder)
        return folder
    from random_models import taesd_folder

    return taesd_folder()


def warm_up_process(folder: Path) -> None:
    """One untimed Engine load and step, so that no row pays for being the first in its process: the first Engine
    of a process loaded in 4.3 s against 2.4 s and ran its steps about 5 % slower (3.71 against 3.54 s per step)
    than a second one in the same process, measured on the machine of RESULTS.md."""
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(settings=Settings(model=str(folder), device="cpu", compile="never"))
    engine.generate(prompt=PROMPT, steps=1, seed=0, progress=False)
    del engine
    release_memory()


def plan_cpu(bench: Bench, folder: Path) -> None:
    only = set(bench.args.only.split(",")) if bench.args.only else None

    def want(key):
        return (only is None or key in only) and not bench.over_budget()

    if not bench.args.quick:
        warm_up_process(folder)
    if want("original"):
        bench.plain("original: diffusers fp32, PNDM 50", folder, torch.float32)
    if want("default"):
        bench.engine("sdart default (bf16, channels_last, fused QKV, DPM++ 2M Karras 25)", folder, compare_to="self")
    if want("plain-bf16"):
        bench.engine("sdart bf16 only (no channels_last, no fused QKV)", folder, channels_last=False, fuse_qkv=False,
                     compare_to="default")
    if want("channels_last"):
        bench.engine("sdart bf16 + channels_last", folder, fuse_qkv=False, compare_to="default")
    if want("step_cache"):
        bench.engine("sdart default + step cache (every 3rd step full)", folder, step_cache=3, compare_to="default")
    if want("token_downsampling"):
        bench.engine("sdart default + token downsampling 2", folder, token_downsampling=2, compare_to="default")
    if want("fast"):
        bench.engine("sdart default + token downsampling 2 + step cache 3", folder, token_downsampling=2,
                     step_cache=3, compare_to="default")
    if want("int8"):
        bench.engine("sdart default + int8 weights", folder, quantize="int8", compare_to="default")
    if want("lcm"):
        bench.engine("sdart default, LCM sampler 4 steps (LCM-LoRA / LCM / Turbo models)", folder, sampler="LCM",
                     steps=4)
    if want("taesd"):
        # No pixel comparison: a random TAESD and a random VAE decode unrelated pictures; only the time is real.
        bench.engine("sdart default + TAESD decoder (--vae madebyollin/taesd)", folder, vae=str(taesd(bench)))
    if want("fastest"):
        bench.engine("sdart LCM 4 steps + TAESD + step cache 2", folder, sampler="LCM", steps=4, vae=str(taesd(bench)),
                     step_cache=2)
    if bench.args.cpu_compile and want("compile"):
        from sdart.settings import Settings

        cache = Path(bench.args.compile_cache or (bench.out / "compile-cache"))
        build_s = ensure_artifacts(Settings(model=str(folder), device="cpu", cache_dir=cache))
        row = bench.engine("sdart default, compiled artifact present (sdart compile)", folder, compile="auto",
                           cache_dir=str(cache), compare_to="default")
        if row is not None and build_s:
            print(f"built the artifacts in {build_s:.0f} s", flush=True)
    if want("rss") and not bench.args.quick:
        rss_runs(bench, folder)


def plan_cuda(bench: Bench, folder: Path) -> None:
    only = set(bench.args.only.split(",")) if bench.args.only else None

    def want(key):
        return (only is None or key in only) and not bench.over_budget()

    batch = (1, bench.args.batch)
    if want("original"):
        bench.plain("original: diffusers fp16, PNDM 50", folder, torch.float16, batch_sizes=batch)
    if want("original-fp32"):
        bench.plain("original: diffusers fp32, PNDM 50", folder, torch.float32)
    if want("default"):
        bench.engine("sdart default fp16, PNDM 50", folder, sampler="PNDM", steps=50, batch_sizes=batch,
                     compare_to="self")
        bench.engine("sdart default fp16, DPM++ 2M Karras 25", folder, batch_sizes=(1, bench.args.batch, 16))
    if want("compile"):
        compile_runs(bench, folder)
    if want("step_cache"):
        bench.engine("sdart fp16 + step cache 3, PNDM 50", folder, sampler="PNDM", steps=50, step_cache=3,
                     compare_to="default")
    if want("token_downsampling"):
        bench.engine("sdart fp16 + token downsampling 2, PNDM 50", folder, sampler="PNDM", steps=50,
                     token_downsampling=2, compare_to="default")
    if want("memory"):
        bench.engine("sdart --memory low, PNDM 20", folder, sampler="PNDM", steps=20, memory="low")
        bench.engine("sdart --memory minimal, PNDM 20", folder, sampler="PNDM", steps=20, memory="minimal")
    if want("sdxl"):
        sdxl(bench)
    if want("bf16"):
        bench.engine("sdart bf16, PNDM 50", folder, sampler="PNDM", steps=50, dtype="bfloat16")
    if want("no-speed"):
        bench.engine("sdart fp16 without channels_last/fused QKV, PNDM 50", folder, sampler="PNDM", steps=50,
                      channels_last=False, fuse_qkv=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny model, few steps: a smoke test of every path")
    p.add_argument("--plan", choices=("cpu", "cuda"), help="which set of configurations (default: by --device)")
    p.add_argument("--out", default=str(HERE), help="folder for results-*.json, RESULTS.md and chart.png")
    p.add_argument("--folder", help="SD 1.5 diffusers folder to use (default: build random weights in the cache)")
    p.add_argument("--only", help="comma-separated configuration keys (see plan_cpu / plan_cuda)")
    p.add_argument("--steps-cpu", type=int, default=4, help="UNet steps actually run per CPU configuration")
    p.add_argument("--steps-original", type=int, default=50)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per GPU configuration (median)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=0, help="skip what's left after this many seconds")
    p.add_argument("--cpu-compile", action="store_true", help="also time the compiled artifacts on CPU (built once if missing: minutes)")
    p.add_argument("--compile-cache")
    p.add_argument("--compile-timeout-s", type=float, default=400)
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--append", action="store_true", help="keep the rows already in the results file")
    # internal: one configuration in a child process
    p.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile-label", default="cold", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--quantize", default="none", help=argparse.SUPPRESS)
    p.add_argument("--memory", default="balanced", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_compile:
        return compile_child(args)
    if args.child_rss:
        return rss_child(args)
    if args.quick:
        args.steps_cpu, args.steps_original, args.repeats, args.batch = 3, 4, 1, 2
    from sdart.loading import quiet_libraries

    quiet_libraries()
    bench = Bench(args)
    if args.append and bench.results_file.is_file():
        previous = json.loads(bench.results_file.read_text())
        bench.rows = previous.pop("rows")
        bench.meta.update({k: v for k, v in previous.items() if k not in bench.meta})  # e.g. unet_ab
    folder = model_folder(args)
    print(json.dumps(bench.meta), flush=True)
    plan = args.plan or ("cuda" if bench.cuda else "cpu")
    (plan_cuda if plan == "cuda" else plan_cpu)(bench, folder)
    bench.save()
    bench.rss.close()
    print(f"wrote {bench.results_file} in {time.perf_counter() - bench.started:.0f} s", flush=True)
    if not args.no_report:
        from report import write_report

        write_report(Path(args.out))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
