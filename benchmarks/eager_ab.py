#!/usr/bin/env python3
"""Where the eager SD 1.5 UNet loses time against the compiled one, and what eager can win back losslessly.

1. `--profile`: torch.profiler over one call of sdart's default eager UNet (bf16, channels_last, fused QKV): the
   operators by self time (what a compile could fuse away, what it can't).
2. Interleaved A/B of eager variants that keep the picture: oneDNN weights prepacked once for the CPU (the
   blocked layout its AMX/AVX-512 kernels want, which eager otherwise reorders at every call) for the Linear
   layers, the 3×3 convolutions, or both (`torch.ops.mkldnn._reorder_*_weight` + `_linear_pointwise` /
   `_convolution_pointwise`, the calls Inductor emits for frozen weights).

    python benchmarks/eager_ab.py [--rounds 3] [--profile]   # adds "eager_ab" to results-compile-cpu.json
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


class PackedLinear(torch.nn.Module):
    """nn.Linear with its weight in oneDNN's blocked layout, packed once for `rows` input rows."""

    def __init__(self, linear: torch.nn.Linear, rows: int):
        super().__init__()
        self.out_features = linear.out_features
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows),
                             persistent=False)
        self.bias = linear.bias

    def forward(self, x):
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


class PackedConv(torch.nn.Module):
    """nn.Conv2d with its weight packed once for the input shape of its first call."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.packed = None

    def forward(self, x):
        c = self.conv
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                c.weight.detach(), list(c.padding), list(c.stride), list(c.dilation), c.groups, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed, c.bias, list(c.padding), list(c.stride),
                                                       list(c.dilation), c.groups, "none", [], "")


def packed(model: torch.nn.Module, linears: bool, convs: bool, rows: int = 8192) -> torch.nn.Module:
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if linears and isinstance(child, torch.nn.Linear):
                setattr(parent, name, PackedLinear(child, rows))
            elif convs and isinstance(child, torch.nn.Conv2d) and child.kernel_size == (3, 3):
                setattr(parent, name, PackedConv(child))
    return model


def profile(model, x, t, c) -> list[dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.inference_mode():
        model(x, t, c)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x, t, c)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count} for e in events]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--folder")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=str(HERE / "results-compile-cpu.json"))
    args = p.parse_args()
    from diffusers import UNet2DConditionModel

    from random_models import sd15_folder

    folder = sd15_folder(args.folder)
    fast = UNet2DConditionModel.from_pretrained(folder / "unet", variant="fp16", dtype=torch.bfloat16).eval()
    fast.to(memory_format=torch.channels_last)
    fast.fuse_qkv_projections()
    x = torch.randn(2, 4, 64, 64, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    t, c = torch.tensor(500), torch.randn(2, 77, 768, dtype=torch.bfloat16)
    result = {"cpu": machine("cpu")["cpu"], "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": "python benchmarks/eager_ab.py " + " ".join(sys.argv[1:])}
    if args.profile:
        result["profile"] = profile(fast, x, t, c)
        print(json.dumps(result["profile"], indent=1), flush=True)
    models = {"sdart default eager": fast, "+ prepacked Linear": packed(fast, True, False),
              "+ prepacked 3x3 conv": packed(fast, False, True), "+ both": packed(fast, True, True)}
    times: dict[str, list[float]] = {n: [] for n in models}
    diffs = {}
    with torch.inference_mode():
        reference = fast(x, t, c).sample.float()
        for name, model in models.items():  # warm-up, and the difference to the default (bf16 rounding)
            diffs[name] = round(float((model(x, t, c).sample.float() - reference).abs().max()), 4)
        names = list(models)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                started = time.perf_counter()
                models[name](x, t, c)
                times[name].append(round(time.perf_counter() - started, 3))
                print(f"round {r} {name}: {times[name][-1]:.2f} s (load {load_average()})", flush=True)
    base = statistics.median(times[names[0]])
    result["rows"] = [{"variant": n, "call_s": times[n], "median_s": round(statistics.median(times[n]), 3),
                       "x_vs_default": round(base / statistics.median(times[n]), 3), "max_abs_diff": diffs[n]}
                      for n in names]
    result["load_avg_end"] = load_average()
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["eager_ab"] = result
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps(result["rows"], indent=1))


if __name__ == "__main__":
    main()
