#!/usr/bin/env python3
"""Process start to the first denoising step of `sdart generate`, in fresh processes, eager against compiled.

Each configuration runs `sdart generate` (the CLI's own code, called in a child process started for it) on the
random-weight SD 1.5 (benchmarks/random_models.py), 512², 2 steps, and reports seconds from the moment the parent
started the child to the end of the first denoising step, the seconds per step after it, and the child's peak RSS:

- `cold`: `--compile always` with an empty cache folder: builds the UNet and VAE decoder, then runs (once);
- `warm`: `--compile auto` with those artifacts present (the default path on a second start);
- `eager`: `--compile never`.

Warm and eager alternate round by round, so that both see the same load on average.

    python benchmarks/first_step.py [--rounds 3] [--skip-cold]   # adds "first_step" to results-compile-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

PROMPT = "a photograph of an astronaut riding a horse"
MODES = {"cold": "always", "warm": "auto", "eager": "never"}


def child(args) -> None:
    """`sdart generate` with the step callback timed: the first step's end, and each step after it."""
    import sdart.cli.generate as generate_module
    from sdart.cli.app import app

    marks: list[float] = []
    progress_bar = generate_module._progress_bar

    @contextmanager
    def timed_progress_bar(request):
        with progress_bar(request) as on_step:
            def on_step_timed(p):
                marks.append(time.time())
                on_step(p)

            yield on_step_timed

    generate_module._progress_bar = timed_progress_bar
    argv = ["generate", PROMPT, "--model", args.folder, "--steps", str(args.steps), "--seed", "1", "--width",
            str(args.size), "--height", str(args.size), "--compile", MODES[args.config], "--output-dir", args.work,
            "--json"]
    try:
        app(argv, standalone_mode=False)
    finally:
        steps = [b - a for a, b in zip(marks, marks[1:])]
        from measure import peak_rss_bytes

        hwm = peak_rss_bytes()
        print("CHILD_RESULT " + json.dumps({
            "config": args.config, "first_step_s": round(marks[0] - args.t0, 2) if marks else None,
            "step_s": [round(s, 2) for s in steps], "done_s": round(time.time() - args.t0, 2),
            "peak_rss_gib": round(hwm / 2**30, 2)}), flush=True)


def run_child(args, config: str, cache_dir: Path) -> dict:
    from measure import load_average

    env = {**os.environ, "SDART_CACHE_DIR": str(cache_dir), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--child", "--config", config, "--folder", args.folder, "--work", args.work,
           "--steps", str(args.steps), "--size", str(args.size), "--t0", repr(time.time())]
    load_before = load_average()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        row = {"config": config, "error": f"timed out after {args.timeout_s:.0f} s"}
    else:
        lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD_RESULT ")]
        row = json.loads(lines[-1].removeprefix("CHILD_RESULT ")) if lines else {
            "config": config, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        # What reached the user's terminal (stderr) besides sdart's own lines: the "quiet" check.
        row["stderr_lines"] = [line for line in proc.stderr.splitlines() if line.strip()][:20]
    row.update(load_before=load_before, load_after=load_average())
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--folder", help="SD 1.5 diffusers folder (default: random weights in the cache)")
    p.add_argument("--cache-dir", default="/tmp/sdart-first-step-cache", help="the artifacts' folder for this run")
    p.add_argument("--work", default="/tmp/sdart-first-step-out", help="where the images go")
    p.add_argument("--skip-cold", action="store_true", help="keep the artifacts --cache-dir holds (no cold build)")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--out", default=str(HERE / "results-compile-cpu.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    import shutil

    from measure import machine
    from random_models import sd15_folder

    args.folder = str(sd15_folder(args.folder))
    cache_dir = Path(args.cache_dir)
    rows = []
    if not args.skip_cold:
        shutil.rmtree(cache_dir, ignore_errors=True)
        rows.append(run_child(args, "cold", cache_dir))
    for r in range(args.rounds):
        for config in (("warm", "eager") if r % 2 == 0 else ("eager", "warm")):
            rows.append(run_child(args, config, cache_dir))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["first_step"] = {"rows": rows, "machine": machine("cpu"), "date": time.strftime("%Y-%m-%d %H:%M"),
                          "command": "python benchmarks/first_step.py " + " ".join(sys.argv[1:])}
    out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
