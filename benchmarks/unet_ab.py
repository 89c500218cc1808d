#!/usr/bin/env python3
"""Interleaved A/B timing of one SD 1.5 UNet call (CFG batch 2, 64×64 latents) per CPU variant.

On a machine shared with other work, a configuration timed minutes after another sees a different load;
alternating the variants round by round (A B C D, D C B A, …) lets each see the same load on average.

    python benchmarks/unet_ab.py [--rounds 2]     # adds "unet_ab" to benchmarks/results-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402

from measure import load_average  # noqa: E402
from sdart.speed.stepcache import _shallow_forward  # noqa: E402

TOKEN_DOWNSAMPLING = "bf16 channels_last + fused QKV + token downsampling 2 (changes the image)"
COMPILED = "bf16 channels_last + fused QKV, torch.compile (sdart --compile: Inductor, frozen weights)"
COMPILED_DOWNSAMPLED = "the same compiled, + token downsampling 2 (changes the image)"


def variants(folder: Path, compile: bool = False) -> dict[str, torch.nn.Module]:
    from diffusers import UNet2DConditionModel

    from sdart.speed.quant import quantize_int8
    from sdart.speed.tokendownsampling import enable_token_downsampling

    fp32 = UNet2DConditionModel.from_pretrained(folder / "unet", variant="fp16", dtype=torch.float32).eval()
    plain = UNet2DConditionModel.from_pretrained(folder / "unet", variant="fp16", dtype=torch.bfloat16).eval()
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    fast.fuse_qkv_projections()
    int8 = copy.deepcopy(fast)
    quantize_int8(int8)
    downsampled = copy.deepcopy(fast)
    enable_token_downsampling(downsampled, 2)
    models = {"fp32 plain": fp32, "bf16 plain": plain, "bf16 channels_last + fused QKV": fast,
              "bf16 channels_last + fused QKV + int8 weights": int8, TOKEN_DOWNSAMPLING: downsampled}
    if compile:  # through sdart's own compile step, so that this times what `--compile` does
        from types import SimpleNamespace

        from sdart.speed.compile import compile_unet
        from sdart.speed.options import SpeedOptions

        for name, model in ((COMPILED, fast), (COMPILED_DOWNSAMPLED, downsampled)):
            holder = SimpleNamespace(unet=copy.deepcopy(model))
            compile_unet(holder, SpeedOptions(compile=True), torch.device("cpu"))
            models[name] = holder.unet
    return models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--folder")
    p.add_argument("--out", default=str(HERE / "results-cpu.json"))
    p.add_argument("--compile", action="store_true", help="add the torch.compile variant (minutes of compiling)")
    args = p.parse_args()
    from random_models import sd15_folder

    models = variants(sd15_folder(args.folder), compile=args.compile)
    names = list(models)
    latents = torch.randn(2, 4, 64, 64)
    context = torch.randn(2, 77, 768)
    shallow = "step cache: shallow branch of bf16 channels_last + fused QKV"
    names.append(shallow)
    times: dict[str, list[float]] = {n: [] for n in names}
    fast = models["bf16 channels_last + fused QKV"]
    kept = {}
    hook = fast.up_blocks[-1].attentions[0].register_forward_hook(lambda m, a, out: kept.update(feature=out[0]))
    with torch.inference_mode():
        warmup_s = {}
        for name, model in models.items():  # warm-up: oneDNN picks and caches its kernels; compiling happens here
            dtype = next(model.parameters()).dtype
            x = latents.to(dtype)
            if name not in ("fp32 plain", "bf16 plain"):
                x = x.contiguous(memory_format=torch.channels_last)
            started = time.perf_counter()
            model(x, 500, context.to(dtype))
            warmup_s[name] = round(time.perf_counter() - started, 1)
            print(f"warm-up {name}: {warmup_s[name]} s", flush=True)
        hook.remove()
        models[shallow] = lambda x, t, c: _shallow_forward(fast, x, torch.tensor(t), c, kept["feature"], None, None)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                model = models[name]
                dtype = torch.bfloat16 if name == shallow else next(model.parameters()).dtype
                x = latents.to(dtype)
                if name != "fp32 plain" and name != "bf16 plain":
                    x = x.contiguous(memory_format=torch.channels_last)
                started = time.perf_counter()
                model(x, 500, context.to(dtype))
                times[name].append(time.perf_counter() - started)
                print(f"round {r} {name}: {times[name][-1]:.2f} s (load {load_average()})", flush=True)
    rows = [{"variant": n, "unet_call_s": [round(t, 2) for t in times[n]], "warmup_s": warmup_s.get(n),
             "mean_s": round(sum(times[n]) / len(times[n]), 2)} for n in names]
    base = rows[0]["mean_s"]
    for row in rows:
        row["x_vs_fp32"] = round(base / row["mean_s"], 2)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["unet_ab"] = {"rows": rows, "rounds": args.rounds, "load_avg_end": load_average(),
                       "command": "python benchmarks/unet_ab.py " + " ".join(sys.argv[1:])}
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
