#!/usr/bin/env python3
"""Interleaved A/B timing of one SD 1.5 UNet call (CFG batch 2, 64×64 latents) per CPU variant.

On a machine shared with other work, a configuration timed minutes after another sees a different load;
alternating the variants round by round (A B C D, D C B A, …) lets each see the same load on average.

    python benchmarks/unet_ab.py [--rounds 2] [--compile] [--jit] [--only "fp32,bf16 channels_last"]
                                                  # adds "unet_ab" to benchmarks/results-compile-cpu.json
    python benchmarks/unet_ab.py --compile --only fp32,bf16,default,compiled,openvino --rounds 3 \
        --key unet_ab_openvino                                                  # with the OpenVINO peer
    python benchmarks/unet_ab.py --quick --only fp32,default,openvino           # tiny model: a smoke test

The `openvino` row (the outside peer, an optional extra: see benchmarks/openvino_peer.py for its install) also
starts one OpenVINO-only process first, for its conversion time and peak RSS.
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

from measure import load_average, machine, release_memory  # noqa: E402
from sdart.speed.stepcache import _shallow_forward  # noqa: E402

TOKEN_DOWNSAMPLING = "bf16 channels_last + fused QKV + token downsampling 2 (changes the image)"
COMPILED = "bf16 channels_last + fused QKV, compiled artifact (sdart default when `sdart compile` has run)"
COMPILED_DOWNSAMPLED = "the same compiled, + token downsampling 2 (changes the image)"
JIT = "bf16 channels_last + fused QKV, torch.compile with freezing (sdart's --compile before artifacts)"
OPENVINO = "OpenVINO bf16 (the plain fp32 UNet converted, compiled with INFERENCE_PRECISION_HINT bf16)"


def artifact(model: torch.nn.Module, cache_dir: Path, token_downsampling: int = 1):
    """The UNet's compiled artifact through sdart's own store (built if missing): what `sdart compile` makes and
    the Engine loads. Returns a callable of (sample, timestep, context) and the build seconds (0: it existed)."""
    from sdart.speed.artifacts import ArtifactStore
    from sdart.speed.compile import Target, build, graph_changing_options, load, unet_inputs
    from sdart.speed.options import SpeedOptions

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


def openvino_row(fp32: torch.nn.Module, check_f32: bool = False) -> tuple[object, dict]:
    """The OpenVINO peer built from the fp32 UNet (same weights as every row), and its facts: conversion and
    compile seconds, and its output against torch fp32's (with `check_f32`, also compiled in f32: the conversion
    alone, without bf16's rounding)."""
    import openvino_peer

    inputs = openvino_peer.example_inputs(fp32)
    peer, facts = openvino_peer.build(fp32, inputs, "bf16")
    facts["vs_torch_fp32"] = openvino_peer.max_abs_diff(peer, fp32, inputs)
    if check_f32:
        exact, _ = openvino_peer.build(fp32, inputs, "f32")
        facts["f32_vs_torch_fp32"] = openvino_peer.max_abs_diff(exact, fp32, inputs)
    print(f"openvino: {facts}", flush=True)
    return peer, facts


def openvino_process(folder: Path) -> dict:
    """An OpenVINO-only child process (openvino_peer.py): conversion time and peak RSS without the torch rows."""
    from measure import child_result

    row = child_result([sys.executable, str(HERE / "openvino_peer.py"), "--folder", str(folder)], timeout=3600)
    print(f"OpenVINO-only process: {row}", flush=True)
    return row


def variants(folder: Path, compile: bool = False, jit: bool = False, cache_dir: Path | None = None,
             downsampled_compile: bool = False, only: set[str] | None = None, openvino: bool = False,
             check_f32: bool = False) -> tuple[dict, dict[str, float], dict[str, dict]]:
    """The UNet variants to time; `only`: the keys of main's --only (None: all but openvino). Also each variant's
    build seconds, and facts (the openvino row's conversion and output check)."""
    from random_models import load_unet
    from sdart.speed.quant import quantize_int8
    from sdart.speed.tokendownsampling import enable_token_downsampling

    def want(key: str) -> bool:
        return only is None or key in only

    plain = load_unet(folder, torch.bfloat16)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    fast.fuse_qkv_projections()
    models = {}
    if want("fp32"):
        models["fp32 plain"] = load_unet(folder, torch.float32)
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
    facts: dict[str, dict] = {}
    if openvino:  # converted from the fp32 row's model when there is one (a second fp32 copy would be 3.4 GB)
        fp32 = models["fp32 plain"] if "fp32 plain" in models else load_unet(folder, torch.float32)
        models[OPENVINO], facts[OPENVINO] = openvino_row(fp32, check_f32)
        build_s[OPENVINO] = facts[OPENVINO]["convert_s"] + facts[OPENVINO]["compile_s"]
        del fp32
        release_memory()
    return models, build_s, facts


def tiny_folder() -> Path:
    """sdart's tiny SD 1.5-shaped test model (2 levels, 32/64 channels, text width 32), saved once in the
    benchmarks' cache (random_models.cache_dir)."""
    from random_models import cache_dir
    from sdart.testing import save_tiny_model

    folder = cache_dir() / "tiny-sd15"
    return folder if (folder / "model_index.json").is_file() else save_tiny_model(folder, "sd15")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--folder", help="the random SD 1.5 folder (default: built once in the cache)")
    p.add_argument("--quick", action="store_true", help="a tiny SD 1.5-shaped UNet instead: a smoke test (seconds)")
    p.add_argument("--key", default="unet_ab", help="the results file's entry this run writes (report.py prints "
                   "unet_ab, unet_ab_openvino and unet_ab_jit)")
    p.add_argument("--out", help="results file (default benchmarks/results-compile-cpu.json; with --quick, "
                                 "/tmp/sdart-unet-ab-quick.json)")
    p.add_argument("--compile", action="store_true", help="add sdart's compiled artifacts (built if missing: minutes)")
    p.add_argument("--compile-td", action="store_true", help="with --compile: the token-downsampled artifact too")
    p.add_argument("--jit", action="store_true", help="add torch.compile with freezing (minutes at every start)")
    p.add_argument("--cache-dir", help="artifacts' cache folder (default /tmp/sdart-unet-ab-cache)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant before the rounds")
    p.add_argument("--openvino", action="store_true", help="add the OpenVINO peer (an optional install)")
    p.add_argument("--no-openvino-process", action="store_true",
                   help="skip the OpenVINO-only process (conversion time and peak RSS)")
    p.add_argument("--only", help="comma-separated keys: fp32, bf16, default, int8, td, compiled, compiled-td, jit, "
                                  "openvino")
    args = p.parse_args()
    from random_models import sd15_folder

    openvino = args.openvino or "openvino" in (args.only or "").split(",")
    if openvino:
        import openvino_peer

        openvino_peer.import_openvino()  # fails now, naming the install command, rather than after loading
    folder = tiny_folder() if args.quick else sd15_folder(args.folder)
    ov_process = openvino_process(folder) if openvino and not args.no_openvino_process else None
    models, build_s, facts = variants(folder, compile=args.compile, jit=args.jit,
                                      cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                                      downsampled_compile=args.compile_td,
                                      only=set(args.only.split(",")) if args.only else None,
                                      openvino=openvino, check_f32=args.quick)
    if args.only:  # a subset, by short key, in the order given (the first is the base of the ratios)
        keys = {"fp32": "fp32 plain", "bf16": "bf16 plain", "default": "bf16 channels_last + fused QKV",
                "int8": "bf16 channels_last + fused QKV + int8 weights", "td": TOKEN_DOWNSAMPLING,
                "compiled": COMPILED, "compiled-td": COMPILED_DOWNSAMPLED, "jit": JIT, "openvino": OPENVINO}
        models = {keys[k]: models[keys[k]] for k in args.only.split(",") if keys.get(k) in models}
    names = list(models)
    fast = models.get("bf16 channels_last + fused QKV")
    config = json.loads((folder / "unet" / "config.json").read_text())
    latents = torch.randn(2, config["in_channels"], 64, 64)  # CFG batch 2, 512² (SD 1.5: 2×4×64×64)
    context = torch.randn(2, 77, config["cross_attention_dim"])  # SD 1.5: 2×77×768
    shallow = "step cache: shallow branch of bf16 channels_last + fused QKV"
    kept = {}
    if fast is not None and not args.only:
        names.append(shallow)
        hook = fast.up_blocks[-1].attentions[0].register_forward_hook(lambda m, a, out: kept.update(feature=out[0]))

    def inputs(name: str):
        dtype = torch.float32 if name in ("fp32 plain", OPENVINO) else torch.bfloat16  # OpenVINO takes fp32 in
        x = latents.to(dtype)
        if name not in ("fp32 plain", "bf16 plain", OPENVINO):
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
    rows = [{"variant": n, "unet_call_s": [round(t, 3) for t in times[n]], "warmup_s": warmup_s.get(n),
             "build_s": round(build_s[n], 1) if n in build_s else None, **facts.get(n, {}),
             "median_s": round(statistics.median(times[n]), 3), "mean_s": round(statistics.mean(times[n]), 3)}
            for n in names]
    base = rows[0]["median_s"]
    for row in rows:
        row["x_vs_first"] = round(base / row["median_s"], 2)
    out = Path(args.out or ("/tmp/sdart-unet-ab-quick.json" if args.quick else HERE / "results-compile-cpu.json"))
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[args.key] = {"rows": rows, "rounds": args.rounds, "load_avg_end": load_average(),
                       "cpu": machine("cpu")["cpu"], "date": time.strftime("%Y-%m-%d %H:%M"),
                       "command": "python benchmarks/unet_ab.py " + " ".join(sys.argv[1:]),
                       **({"openvino_process": ov_process} if ov_process else {})}
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
