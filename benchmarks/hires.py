#!/usr/bin/env python3
"""Hires fix on SD 1.5's architecture with random weights (benchmarks/random_models.py): what a 512² → 1024² hires
image costs against the two plain runs it sits between (512² and 1024²), and the whole-process peak RSS of a
1024² second pass with `--memory low` against a plain 512² run.

    python benchmarks/hires.py                 # CPU: cost (one process, interleaved) and peak RSS (one process each)
    python benchmarks/hires.py --only rss      # only the memory rows
    python benchmarks/hires.py --quick         # tiny model, seconds: a smoke test of the code paths

Steps are few (the first step of each pass is timed too); the per-step and fixed costs are extrapolated to
`--full-steps` per pass. Results go to `hires-<device>.json` beside this file (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from measure import GiB, load_average, machine, peak_rss_bytes, release_memory  # noqa: E402
from run import model_folder  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"
# name → request fields on top of the prompt, seed and steps
CONFIGS = {
    "plain 512²": dict(width=512, height=512),
    "plain 1024²": dict(width=1024, height=1024),
    "hires 512² → 1024² (Latent)": dict(width=512, height=512, enable_hr=True, hr_scale=2.0),
    "hires 512² → 1024² (Lanczos)": dict(width=512, height=512, enable_hr=True, hr_scale=2.0, hr_upscaler="Lanczos"),
}
QUICK_SIZES = {512: 64, 1024: 128}  # the tiny model's native size plays SD 1.5's 512


def scaled(fields: dict, quick: bool) -> dict:
    if not quick:
        return fields
    return {k: QUICK_SIZES.get(v, v) if k in ("width", "height") else v for k, v in fields.items()}


def timed_generate(engine, fields: dict, steps: int) -> dict:
    """One image; the step ends of each pass and the total, from the engine's own progress."""
    ends: list[tuple[int, float]] = []
    started = time.perf_counter()
    result = engine.generate(prompt=PROMPT, seed=0, steps=steps, **fields,
                             on_step=lambda p: ends.append((p.step, time.perf_counter())))
    total = time.perf_counter() - started
    first = [t for step, t in ends if step <= steps]
    second = [t for step, t in ends if step > steps]
    row = {"total_s": total, "size": "x".join(map(str, result.images[0].size))}
    for name, marks, before in (("first", first, started), ("second", second, first[-1] if first else started)):
        if not marks:
            continue
        intervals = [b - a for a, b in zip([before, *marks], marks)]
        # The first interval of a pass holds what comes before its first step (text encoding; for the second
        # pass the upscale and, in pixels, the decode and encode); the median of the rest is a step.
        row[f"{name}_step_s"] = statistics.median(intervals[1:]) if len(intervals) > 1 else intervals[0]
        row[f"{name}_first_interval_s"] = intervals[0]
    return row


def extrapolate(row: dict, steps: int, full: int) -> float:
    """The image's time with `full` steps per pass instead of `steps`."""
    extra = sum(row.get(f"{name}_step_s", 0.0) * (full - steps) for name in ("first", "second"))
    return row["total_s"] + extra


def cost_runs(args, folder: Path, out: dict) -> None:
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(settings=Settings(model=str(folder), device="cpu", memory=args.memory))
    engine.generate(prompt=PROMPT, seed=0, steps=1, progress=False, **scaled(CONFIGS["plain 512²"], args.quick))
    for round_ in range(args.rounds):
        for name, fields in CONFIGS.items():  # interleaved: the machine's load hits every row alike
            row = timed_generate(engine, scaled(fields, args.quick), args.steps)
            row.update(config=name, round=round_, steps=args.steps, memory=args.memory, load_avg=load_average(),
                       extrapolated_s=extrapolate(row, args.steps, args.full_steps), full_steps=args.full_steps)
            out["rows"].append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
            print(json.dumps(out["rows"][-1]), flush=True)
            save(args, out)


def rss_child(args) -> None:
    """Whole-process peak RSS (VmHWM: load included) of one configuration in a fresh process."""
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(settings=Settings(model=args.folder, device="cpu", memory=args.memory))
    at_load = peak_rss_bytes()
    engine.generate(prompt=PROMPT, seed=0, steps=args.steps, progress=False,
                    **scaled(CONFIGS[args.config], args.quick))
    print("CHILD_RESULT " + json.dumps({"config": f"peak RSS: {args.config}", "memory": args.memory,
                                        "steps": args.steps, "peak_rss_process_gib": round(peak_rss_bytes() / GiB, 3),
                                        "peak_rss_at_load_gib": round(at_load / GiB, 3)}), flush=True)


def rss_runs(args, folder: Path, out: dict) -> None:
    plans = [("plain 512²", "low"), ("hires 512² → 1024² (Latent)", "low"), ("hires 512² → 1024² (Lanczos)", "low"),
             ("plain 512²", "balanced"), ("hires 512² → 1024² (Latent)", "balanced")]
    for config, memory in plans:
        command = [sys.executable, __file__, "--child-rss", "--folder", str(folder), "--config", config,
                   "--memory", memory, "--steps", str(args.steps)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD_RESULT ")]
        if not lines:
            print(proc.stderr[-3000:], flush=True)
            continue
        out["rows"].append({**json.loads(lines[-1].removeprefix("CHILD_RESULT ")), "load_avg": load_average()})
        print(json.dumps(out["rows"][-1]), flush=True)
        save(args, out)
        release_memory()


def save(args, out: dict) -> None:
    name = f"hires-{'quick' if args.quick else 'cpu'}.json"
    (Path(args.out) / name).write_text(json.dumps(out, indent=1, ensure_ascii=False))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2, help="steps per pass actually run")
    p.add_argument("--full-steps", type=int, default=20, help="steps per pass the times are extrapolated to")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the cost rows")
    p.add_argument("--memory", default="low", help="memory mode of the cost rows")
    p.add_argument("--only", choices=("cost", "rss"), help="only one of the two parts")
    p.add_argument("--quick", action="store_true", help="tiny model (a smoke test)")
    p.add_argument("--folder", help="the random SD 1.5 folder (default: built once in the cache)")
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # run.model_folder reads it
    p.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_rss:
        return rss_child(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    folder = model_folder(args)
    out = {"machine": machine("cpu"), "command": "python benchmarks/hires.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "rows": []}
    if args.only in (None, "cost"):
        cost_runs(args, folder, out)
    if args.only in (None, "rss"):
        rss_runs(args, folder, out)


if __name__ == "__main__":
    main()
