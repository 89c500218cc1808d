#!/usr/bin/env python3
"""Interleaved A/B timing of one SD 1.5 UNet call (CFG batch 2, 64×64 latents) per CPU variant.

On a machine shared with other work, a configuration timed minutes after another sees a different load;
alternating the variants round by round (A B C D, D C B A, …) lets each see the same load on average.

    python benchmarks/unet_ab.py [--rounds 2] [--compile] [--jit] [--only "fp32,bf16 channels_last"]
                                                  # adds "unet_ab" to benchmarks/results-compile-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402

from measure import load_average, machine  # noqa: E402
from sdart.speed.stepcache import _shallow_forward  # noqa: E402

TOKEN_DOWNSAMPLING = "bf16 channels_last + fused QKV + token downsampling 2 (changes the image)"
COMPILED = "bf16 channels_last + fused QKV, compiled artifact (sdart default when `sdart compile` has run)"
COMPILED_DOWNSAMPLED = "the same compiled, + token downsampling 2 (changes the image)"
JIT = "bf16 channels_last + fused QKV, torch.compile with freezing (sdart's --compile before artifacts)"


def artifact(model: torch.nn.Module, cache_dir: Path, token_downsampling: int = 1):
    """The UNet's compiled artifact through sdart's own store (built if missing): what `sdart compile` makes and
    the Engine loads. Returns a callable of (sample, timestep, context) and the build seconds (0: it existed)."""
    from sdart.speed.artifacts import ArtifactStore
    from sdart.speed.compile import Target, build, load, unet_inputs
    from sdart.speed.options import SpeedOptions
    from sdart.speed.compile import graph_changing_options

    options = tuple(sorted(graph_changing_options(SpeedOptions(token_downsampling=token_downsampling)).items()))
    target = Target("unet", model, model.config, "sd1", torch.bfloat16, torch.device("cpu"), options)
    inputs = unet_inputs(model, 1, 512, 512)
    store = ArtifactStore(cache_dir)
    build_s = 0.0
    if store.find(target.key(inputs)) is None:
        package = store.root / "building.pt2"
        package.parent.mkdir(parents=True, exist_ok=True)
        build_s = build(target, inputs, package)
        store.save(target.key(inputs), package, build_s)
    runner = load(target, store.find(target.key(inputs)).package)
    return lambda x, t, c: runner(x.contiguous(), torch.as_tensor(float(t)), c.contiguous()), build_s


def variants(folder: Path, compile: bool = False, jit: bool = False, cache_dir: Path | None = None,
             downsampled_compile: bool = False, only: set[str] | None = None) -> tuple[dict, dict[str, float]]:
    """The UNet variants to time; `only`: the keys of main's --only (None: all)."""
    from diffusers import UNet2DConditionModel

    from sdart.speed.quant import quantize_int8
    from sdart.speed.tokendownsampling import enable_token_downsampling

    def want(key: str) -> bool:
        return only is None or key in only

    plain = UNet2DConditionModel.from_pretrained(folder / "unet", variant="fp16", dtype=torch.bfloat16).eval()
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    fast.fuse_qkv_projections()
    models = {}
    if want("fp32"):
        models["fp32 plain"] = UNet2DConditionModel.from_pretrained(folder / "unet", variant="fp16",
                                                                   dtype=torch.float32).eval()
    if want("bf16"):
        models["bf16 plain"] = plain
    models["bf16 channels_last + fused QKV"] = fast
    if want("int8"):
        int8 = copy.deepcopy(fast)
        quantize_int8(int8)
        models["bf16 channels_last + fused QKV + int8 weights"] = int8
    downsampled = None
    if want("td") or (compile and downsampled_compile):
        downsampled = copy.deepcopy(fast)
        enable_token_downsampling(downsampled, 2)
        models[TOKEN_DOWNSAMPLING] = downsampled
    build_s: dict[str, float] = {}
    if compile:  # through sdart's own store, build and load: what the Engine runs with an artifact present
        cache_dir = cache_dir or Path("/tmp/sdart-unet-ab-cache")
        models[COMPILED], build_s[COMPILED] = artifact(fast, cache_dir)
        if downsampled_compile:
            models[COMPILED_DOWNSAMPLED], build_s[COMPILED_DOWNSAMPLED] = artifact(downsampled, cache_dir, 2)
    if jit:
        import torch._inductor.config as inductor_config

        inductor_config.conv_1x1_as_mm = True
        inductor_config.freezing = True
        models[JIT] = torch.compile(copy.deepcopy(fast), fullgraph=True)
    return models, build_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--folder")
    p.add_argument("--out", default=str(HERE / "results-compile-cpu.json"))
    p.add_argument("--compile", action="store_true", help="add sdart's compiled artifacts (built if missing: minutes)")
    p.add_argument("--compile-td", action="store_true", help="with --compile: the token-downsampled artifact too")
    p.add_argument("--jit", action="store_true", help="add torch.compile with freezing (minutes at every start)")
    p.add_argument("--cache-dir", help="artifacts' cache folder (default /tmp/sdart-unet-ab-cache)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant before the rounds")
    p.add_argument("--only", help="comma-separated keys: fp32, bf16, default, int8, td, compiled, compiled-td, jit")
    args = p.parse_args()
    from random_models import sd15_folder

    models, build_s = variants(sd15_folder(args.folder), compile=args.compile, jit=args.jit,
                               cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                               downsampled_compile=args.compile_td,
                               only=set(args.only.split(",")) if args.only else None)
    if args.only:  # a subset, by short key, in the order given (the first is the base of the ratios)
        keys = {"fp32": "fp32 plain", "bf16": "bf16 plain", "default": "bf16 channels_last + fused QKV",
                "int8": "bf16 channels_last + fused QKV + int8 weights", "td": TOKEN_DOWNSAMPLING,
                "compiled": COMPILED, "compiled-td": COMPILED_DOWNSAMPLED, "jit": JIT}
        models = {keys[k]: models[keys[k]] for k in args.only.split(",") if keys.get(k) in models}
    names = list(models)
    latents = torch.randn(2, 4, 64, 64)
    context = torch.randn(2, 77, 768)
    fast = models.get("bf16 channels_last + fused QKV")
    shallow = "step cache: shallow branch of bf16 channels_last + fused QKV"
    kept = {}
    if fast is not None and not args.only:
        names.append(shallow)
        hook = fast.up_blocks[-1].attentions[0].register_forward_hook(lambda m, a, out: kept.update(feature=out[0]))

    def inputs(name: str):
        dtype = torch.float32 if name == "fp32 plain" else torch.bfloat16
        x = latents.to(dtype)
        if name not in ("fp32 plain", "bf16 plain"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x, context.to(dtype)

    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        warmup_s = {}
        for name, model in models.items():  # warm-up: oneDNN picks and caches its kernels; torch.compile compiles
            x, c = inputs(name)
            for call in range(args.warmup):  # a loaded package's first two calls are slow (measured: 2.2, 1.1, 0.06 s)
                started = time.perf_counter()
                model(x, 500, c)
                warmup_s.setdefault(name, []).append(round(time.perf_counter() - started, 1))
            print(f"warm-up {name}: {warmup_s[name]} s", flush=True)
        if shallow in names:
            hook.remove()
            models[shallow] = lambda x, t, c: _shallow_forward(fast, x, torch.tensor(t), c, kept["feature"], None, None)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                x, c = inputs(name)
                started = time.perf_counter()
                models[name](x, 500, c)
                times[name].append(time.perf_counter() - started)
                print(f"round {r} {name}: {times[name][-1]:.2f} s (load {load_average()})", flush=True)
    rows = [{"variant": n, "unet_call_s": [round(t, 2) for t in times[n]], "warmup_s": warmup_s.get(n),
             "build_s": round(build_s[n], 1) if n in build_s else None,
             "median_s": round(statistics.median(times[n]), 2), "mean_s": round(statistics.mean(times[n]), 2)}
            for n in names]
    base = rows[0]["median_s"]
    for row in rows:
        row["x_vs_first"] = round(base / row["median_s"], 2)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["unet_ab"] = {"rows": rows, "rounds": args.rounds, "load_avg_end": load_average(),
                       "cpu": machine("cpu")["cpu"], "date": time.strftime("%Y-%m-%d %H:%M"),
                       "command": "python benchmarks/unet_ab.py " + " ".join(sys.argv[1:])}
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
