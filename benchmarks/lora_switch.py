#!/usr/bin/env python3
"""What a `<lora:…>` prompt tag costs: switching a LoRA on and off per request, and what a UNet call costs with it.

sdart patches copies of the affected weights for the run (sdart.models.loraswitch); the alternative it was weighed
against keeps peft adapters in the (unfused) model and switches them with `set_adapters` (diffusers' way). Both on
the same pipeline, the UNet calls interleaved round by round (A B C, C B A, …) so that each sees the same load:

    python benchmarks/lora_switch.py [--model sd15|tiny] [--rank 32] [--rounds 2] [--threads 1]

The LoRA is kohya-style (attention, proj_in/out, feed-forward of every transformer block, and the text encoder's
attention and MLP), random, saved to a temporary file and read back through the LoRA folder like a user's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch

from measure import load_average


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def pipeline(kind: str):
    if kind == "tiny":
        from sdart.testing import build_tiny_pipeline

        pipe = build_tiny_pipeline("sd15")
    else:
        from random_models import build_pipeline

        pipe = build_pipeline("sd15")
    pipe.to(torch.bfloat16)  # sdart's default on a CPU with native bf16
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_call(pipe, size: int):
    """One UNet call with CFG (batch 2) at `size`² pixels."""
    latents = torch.randn(2, 4, size // 8, size // 8, dtype=torch.bfloat16)
    text = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, dtype=torch.bfloat16)
    with torch.no_grad():
        return lambda: pipe.unet(latents, 500, encoder_hidden_states=text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, help="torch threads (1 on a machine busy with other work)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = 64 if args.model == "tiny" else args.size

    from sdart.conditioning.extra_networks import LoraWeights
    from sdart.models.lorafiles import LoraFolder
    from sdart.models.loraswitch import AppliedLora, LoraSwitch
    from sdart.speed.options import fuse_qkv
    from sdart.testing.lora import lora_pairs, save_lora

    print(f"load average before: {load_average()}", flush=True)
    pipe = pipeline(args.model)
    folder = Path(tempfile.mkdtemp(prefix="sdart-lora-bench-"))
    save_lora(pipe, folder / "style.safetensors", rank=args.rank, alpha=args.rank / 2)
    pairs = lora_pairs(pipe, rank=args.rank)
    lora_params = sum(d.numel() + u.numel() for d, u in pairs.values())
    file = LoraFolder(folder).find("style")
    print(f"LoRA: rank {args.rank}, {len(pairs)} layers, {lora_params / 1e6:.1f} M parameters, "
          f"{file.path.stat().st_size / 2**20:.0f} MiB", flush=True)
    call = unet_call(pipe, size)
    results: dict[str, list[float]] = {}

    # 1. peft adapters on the unfused model (the alternative): loaded once, switched per request.
    load_s = timed(lambda: pipe.load_lora_weights(str(folder), weight_name="style.safetensors", adapter_name="style"))
    on_s = timed(lambda: pipe.set_adapters(["style"], adapter_weights=[0.8]))
    off_s = timed(pipe.disable_lora)
    call()  # warm-up (oneDNN picks its kernels)
    for r in range(args.rounds):
        order = ("peft off", "peft on") if r % 2 == 0 else ("peft on", "peft off")
        for name in order:
            (pipe.enable_lora if name == "peft on" else pipe.disable_lora)()
            results.setdefault(name, []).append(timed(call))
    pipe.unload_lora_weights()
    print(f"peft: load {load_s:.2f} s, set_adapters {on_s * 1000:.0f} ms, disable {off_s * 1000:.0f} ms", flush=True)

    # 2. sdart: fused QKV as sdart runs it, the LoRA patched onto copies of the weights for one run.
    fuse_qkv(pipe)
    pipe.unet.to(memory_format=torch.channels_last)
    switch = LoraSwitch(pipe)
    lora = [AppliedLora(file, LoraWeights(0.8, 0.8))]
    first_s = timed(lambda: switch.apply(lora))  # reads and matches the file, then patches
    first_restore_s = timed(switch.restore)
    applies, restores = [], []
    call()
    for r in range(args.rounds):
        order = ("sdart without", "sdart with LoRA") if r % 2 == 0 else ("sdart with LoRA", "sdart without")
        for name in order:
            if name == "sdart with LoRA":
                applies.append(timed(lambda: switch.apply(lora)))
            results.setdefault(name, []).append(timed(call))
            if name == "sdart with LoRA":
                restores.append(timed(switch.restore))
    patched = sum(t.module.weight.numel() if hasattr(t.module, "weight") else 0
                  for t in {id(t.module): t for _, t, _ in switch.layers(file)}.values())
    print(f"sdart: first use {first_s:.2f} s (read + match + patch), restore {first_restore_s * 1000:.1f} ms; "
          f"cached apply {min(applies):.2f}–{max(applies):.2f} s, restore {max(restores) * 1000:.1f} ms; "
          f"patched weights {patched / 1e6:.0f} M parameters ({patched * 2 / 2**20:.0f} MiB bf16 held for the run)")
    for name, values in results.items():
        print(f"UNet call {size}² CFG, {name}: " + ", ".join(f"{v:.2f}" for v in values) + " s")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
