#!/usr/bin/env python3
"""Which compiled form of the SD 1.5 UNet reaches its first call sooner in a fresh process, and how fast it runs.

Four ways to keep compiled code between processes, each built once (cold) and then started in fresh processes
(warm), the approaches alternating round by round (A B C D, D C B A, …) so that each sees the same load on average:

- `aoti`: torch.export + an AOTInductor package (`aoti_compile_and_package`), weights left out of the package and
  handed over at load (`load_constants(..., user_managed=True)`: the loaded UNet's own tensors, no copy);
- `aoti-frozen`: the same with Inductor's freezing (weights folded into the package, prepacked for oneDNN);
- `inductor`: torch.compile with Inductor's FX-graph and AOTAutograd caches on disk;
- `inductor-frozen`: the same with freezing on (what `--compile` did before artifacts).

One SD 1.5 UNet call with CFG at 512² (latents 2×4×64×64, bf16, channels_last, fused QKV), random weights
(benchmarks/random_models.py). Every time is seconds from the child process's launch.

    python benchmarks/compile_start.py [--rounds 2] [--only aoti,inductor]   # adds "compile_start" to results-compile-cpu.json
    python benchmarks/compile_start.py --interleaved --rounds 2   # per call: eager vs the packages built above
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
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

APPROACHES = ("aoti", "aoti-frozen", "inductor", "inductor-frozen")


def child(args) -> None:
    """One fresh process: load the UNet, build or load its compiled form, call it `--calls` times."""
    launched = args.t0
    marks: dict[str, float] = {"python_up": time.time() - launched}
    cache = Path(args.work) / args.approach
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")  # before torch is imported
    import torch
    from diffusers import UNet2DConditionModel

    from measure import peak_rss_bytes
    from sdart.speed.compile import UNetCall

    marks["imports"] = time.time() - launched
    unet = UNet2DConditionModel.from_pretrained(Path(args.folder) / "unet", variant="fp16", dtype=torch.bfloat16).eval()
    unet.to(memory_format=torch.channels_last)
    unet.fuse_qkv_projections()
    marks["unet_loaded"] = time.time() - launched
    sample = torch.randn(2, 4, 64, 64, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    timestep = torch.tensor(500.0)
    context = torch.randn(2, 77, 768, dtype=torch.bfloat16)

    module = UNetCall(unet).eval()
    frozen = args.approach.endswith("-frozen")
    package = cache / "unet.pt2"
    with torch.inference_mode():
        reference = module(sample, timestep, context) if args.phase == "build" else None
    if args.approach.startswith("aoti"):
        if args.phase == "build":
            with torch.no_grad():
                program = torch.export.export(module, (sample, timestep, context))
                marks["exported"] = time.time() - launched
                torch._inductor.aoti_compile_and_package(program, package_path=str(package), inductor_configs={
                    "freezing": frozen, "aot_inductor.package_constants_in_so": frozen})
            marks["built"] = time.time() - launched
        compiled = torch._inductor.aoti_load_package(str(package))
        if not frozen:
            names = set(compiled.get_constant_fqns())
            compiled.load_constants({k: v for k, v in module.state_dict().items() if k in names},
                                    check_full_update=True, user_managed=True)
        else:
            del unet, module  # the package holds its own (prepacked) weights
        marks["artifact_loaded"] = time.time() - launched
    else:
        import torch._inductor.config as inductor_config

        inductor_config.conv_1x1_as_mm = True
        inductor_config.freezing = frozen
        compiled = torch.compile(module, fullgraph=True)
    times = []
    with torch.inference_mode():
        out = compiled(sample, timestep, context)
        marks["first_call_done"] = time.time() - launched
        for _ in range(args.calls):
            started = time.perf_counter()
            compiled(sample, timestep, context)
            times.append(round(time.perf_counter() - started, 3))
    row = {"approach": args.approach, "phase": args.phase, **{k: round(v, 2) for k, v in marks.items()},
           "call_s": times, "peak_rss_gib": round(peak_rss_bytes() / 2**30, 2)}
    if reference is not None:
        row["max_abs_diff_vs_eager"] = round(float((out.float() - reference.float()).abs().max()), 4)
        row["reference_max_abs"] = round(float(reference.float().abs().max()), 3)
    if package.is_file():
        row["package_mib"] = round(package.stat().st_size / 2**20, 1)
    print("CHILD_RESULT " + json.dumps(row), flush=True)


def interleaved(args) -> dict:
    """One process: the eager UNet and the AOTI packages `--work` holds, called in turn (A B C, C B A, …)."""
    import statistics

    import torch
    from diffusers import UNet2DConditionModel

    from measure import load_average

    unet = UNet2DConditionModel.from_pretrained(Path(args.folder) / "unet", variant="fp16", dtype=torch.bfloat16).eval()
    unet.to(memory_format=torch.channels_last)
    unet.fuse_qkv_projections()
    sample = torch.randn(2, 4, 64, 64, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    timestep, context = torch.tensor(500.0), torch.randn(2, 77, 768, dtype=torch.bfloat16)
    calls = {"eager": lambda: unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]}
    for approach in ("aoti", "aoti-frozen"):
        package = Path(args.work) / approach / "unet.pt2"
        if not package.is_file():
            continue
        loader = torch._C._aoti.AOTIModelPackageLoader(str(package), "model", False, 1, -1)
        if approach == "aoti":  # the weights: the eager UNet's own tensors (the wrapper's names: "model.")
            names = set(loader.get_constant_fqns())
            state = {f"model.{k}": v for k, v in unet.state_dict().items() if f"model.{k}" in names}
            loader.load_constants(state, False, True, True, False)
        calls[approach] = lambda loader=loader: loader.boxed_run([sample, timestep, context])[0]
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    with torch.inference_mode():
        for call in calls.values():  # warm-up: a package's first two calls are slow
            call(), call()
        for r in range(args.rounds + 1):
            for name in (names if r % 2 == 0 else names[::-1]):
                started = time.perf_counter()
                calls[name]()
                times[name].append(round(time.perf_counter() - started, 2))
                print(f"round {r} {name}: {times[name][-1]} s (load {load_average()})", flush=True)
    return {"rows": [{"approach": n, "call_s": times[n], "median_s": statistics.median(times[n])} for n in names],
            "load_avg_end": load_average()}


def run_child(args, approach: str, phase: str) -> dict:
    from measure import load_average

    cmd = [sys.executable, __file__, "--child", "--approach", approach, "--phase", phase, "--folder", args.folder,
           "--work", args.work, "--calls", str(args.calls), "--t0", repr(time.time())]
    load_before = load_average()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        row = {"approach": approach, "phase": phase, "error": f"timed out after {args.timeout_s:.0f} s",
               "load_before": load_before, "load_after": load_average()}
        print(json.dumps(row), flush=True)
        return row
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD_RESULT ")]
    if not lines:
        row = {"approach": approach, "phase": phase, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        print(proc.stderr[-4000:], flush=True)
    else:
        row = json.loads(lines[-1].removeprefix("CHILD_RESULT "))
    row.update(load_before=load_before, load_after=load_average())
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="warm starts per approach")
    p.add_argument("--calls", type=int, default=3, help="timed UNet calls after the first, per process")
    p.add_argument("--only", help="comma-separated approaches: " + ",".join(APPROACHES))
    p.add_argument("--folder", help="SD 1.5 diffusers folder (default: random weights in the cache)")
    p.add_argument("--work", default="/tmp/sdart-compile-start", help="packages and Inductor caches (rebuilt here)")
    p.add_argument("--interleaved", action="store_true",
                   help="per-call speed only: eager and the packages --work holds, interleaved in one process")
    p.add_argument("--keep", action="store_true", help="reuse what --work holds (skip the cold builds)")
    p.add_argument("--timeout-s", type=float, default=900)
    p.add_argument("--out", default=str(HERE / "results-compile-cpu.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--approach", help=argparse.SUPPRESS)
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    import shutil

    from measure import machine
    from random_models import sd15_folder

    args.folder = str(sd15_folder(args.folder))
    if args.interleaved:
        result = interleaved(args)
        print(json.dumps(result, indent=1))
        out = Path(args.out)
        data = json.loads(out.read_text()) if out.is_file() else {}
        data["compile_interleaved"] = {**result, "cpu": machine("cpu")["cpu"], "date": time.strftime("%Y-%m-%d %H:%M"),
                                       "command": "python benchmarks/compile_start.py " + " ".join(sys.argv[1:])}
        out.write_text(json.dumps(data, indent=1))
        return
    approaches = args.only.split(",") if args.only else list(APPROACHES)
    rows = []
    for approach in approaches:  # cold: build (export + compile, or the first torch.compile call)
        if not args.keep:
            shutil.rmtree(Path(args.work) / approach, ignore_errors=True)
            rows.append(run_child(args, approach, "build"))
    for r in range(args.rounds):
        for approach in (approaches if r % 2 == 0 else approaches[::-1]):
            rows.append(run_child(args, approach, "start"))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["compile_start"] = {"rows": rows, "machine": machine("cpu"), "date": time.strftime("%Y-%m-%d %H:%M"),
                             "command": "python benchmarks/compile_start.py " + " ".join(sys.argv[1:])}
    out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
