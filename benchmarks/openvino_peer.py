#!/usr/bin/env python3
"""OpenVINO as the outside peer of issue 17 (what fastsdcpu runs): the plain diffusers UNet, converted with
`openvino.convert_model` and compiled for the CPU plugin in bf16.

OpenVINO is an optional extra of the benchmark, not a dependency of sdart. Install it into its own folder, apart
from site-packages, so that sdart's tests never see it:

    pip install --no-deps --target ~/.cache/sdart/bench/openvino openvino==2026.4.1

`--no-deps` because the wheel's requirements are `numpy<2.6,>=1.16.6` (the installed numpy already fits; a
second numpy in that folder would shadow it) and `openvino-telemetry` (left out: `convert_model` then uses its
built-in stub and sends nothing). Another folder: `SDART_BENCH_OPENVINO=/path`.

Run as a script, it is the OpenVINO-only process whose peak RSS the benchmark reports (unet_ab.py starts it):

    python benchmarks/openvino_peer.py --folder FOLDER [--calls 3]    # prints CHILD_RESULT {json}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402

from random_models import cache_dir  # noqa: E402
from sdart.speed.compile import UNetCall  # noqa: E402

VERSION = "2026.4.1"


def install_dir() -> Path:
    return Path(os.environ.get("SDART_BENCH_OPENVINO", cache_dir() / "openvino"))


def import_openvino():
    """The openvino package from install_dir(), put first on sys.path only now (when the row is asked for)."""
    folder = install_dir()
    if not (folder / "openvino" / "__init__.py").is_file():
        raise SystemExit(f"OpenVINO (the benchmark's optional peer) is not installed in {folder}. Install it with:\n"
                         f"    pip install --no-deps --target {folder} openvino=={VERSION}")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    import numpy
    import openvino

    if Path(numpy.__file__).is_relative_to(folder):  # an install without --no-deps brought its own numpy
        raise SystemExit(f"{folder} holds a numpy that shadows the system one: reinstall it with --no-deps")
    return openvino


def example_inputs(unet, batch: int = 2, latent: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 latents (batch × C × latent × latent), a scalar timestep, text states (batch × 77 × cross-attention
    width): SD 1.5 at 512² with CFG is 2×4×64×64 and 2×77×768."""
    return (torch.randn(batch, unet.config.in_channels, latent, latent), torch.tensor(500.0),
            torch.randn(batch, 77, unet.config.cross_attention_dim))


def convert(unet, inputs) -> tuple[object, float]:
    """The fp32 UNet as an OpenVINO model with the inputs' shapes fixed (static shapes, as fastsdcpu reshapes its
    models before compiling), and the seconds convert_model took (TorchScript trace + PyTorch frontend)."""
    ov = import_openvino()
    started = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(UNetCall(unet).eval(), example_input=inputs,
                                 input=[ov.PartialShape(list(x.shape)) for x in inputs])
    return model, time.perf_counter() - started


def compile_model(model, precision: str = "bf16") -> tuple[object, float]:
    """Compiled for "CPU": one stream on torch's thread count (so both sides use the same cores),
    computing in `precision` ("bf16"; "f32" to check the conversion itself). Returns it and the seconds taken."""
    ov = import_openvino()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    started = time.perf_counter()
    compiled = ov.Core().compile_model(model, "CPU", config)
    return compiled, time.perf_counter() - started


class Peer:
    """Called like the torch rows, (sample, timestep, context) → noise prediction, on fp32 torch tensors (shared
    with OpenVINO, no copy); the output is the infer request's own buffer, valid until the next call."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def __call__(self, sample: torch.Tensor, timestep, context: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(float(timestep), dtype=torch.float32)
        self.request.infer([sample.contiguous().numpy(), t.numpy(), context.contiguous().numpy()], share_inputs=True)
        return torch.from_numpy(self.request.get_output_tensor(0).data)

    def config(self) -> dict[str, str]:
        values = {k: self.compiled.get_property(k) for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS",
                                                            "NUM_STREAMS", "EXECUTION_DEVICES")}
        return {k: v.to_string() if hasattr(v, "to_string") else str(v) for k, v in values.items()}  # Type → "bf16"


def build(unet, inputs, precision: str = "bf16") -> tuple[Peer, dict]:
    """Convert and compile the fp32 `unet`; the converted model is dropped once compiled (the compiled one holds
    its own weights in `precision`). Returns the callable and its conversion facts."""
    model, convert_s = convert(unet, inputs)
    compiled, compile_s = compile_model(model, precision)
    del model
    peer = Peer(compiled)
    return peer, {"convert_s": round(convert_s, 1), "compile_s": round(compile_s, 1),
                  "openvino": import_openvino().get_version(), **peer.config()}


def max_abs_diff(peer: Peer, unet, inputs) -> dict[str, float]:
    """The OpenVINO output against the torch fp32 UNet's on the same inputs."""
    with torch.inference_mode():
        reference = UNetCall(unet)(*inputs)
    return {"max_abs_diff": float(f"{float((peer(*inputs) - reference).abs().max()):.3g}"),
            "reference_max_abs": round(float(reference.abs().max()), 3)}


def _peak_gib() -> float:
    from measure import GiB, peak_rss_bytes

    return round(peak_rss_bytes() / GiB, 3)


def child() -> None:
    """An OpenVINO-only process: load the fp32 UNet, convert, compile, free the torch model, call it. Peak RSS
    (VmHWM) of the conversion, then of the calls alone (the peak reset by /proc/self/clear_refs after the torch
    model is gone: what a process serving an already converted model holds)."""
    p = argparse.ArgumentParser(description="the OpenVINO-only process of unet_ab.py's openvino row")
    p.add_argument("--folder", required=True, help="a diffusers folder with unet/")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--latent", type=int, default=64, help="latent side (64: 512²)")
    p.add_argument("--precision", default="bf16")
    args = p.parse_args()
    import_openvino()  # before the load: a missing install fails at once, naming its command
    from measure import release_memory
    from random_models import load_unet

    unet = load_unet(Path(args.folder), torch.float32)
    loaded = _peak_gib()
    inputs = example_inputs(unet, 2, args.latent)
    peer, facts = build(unet, inputs, args.precision)
    converted = _peak_gib()
    del unet
    release_memory()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    times = []
    for _ in range(args.calls):
        started = time.perf_counter()
        peer(*inputs)
        times.append(round(time.perf_counter() - started, 3))
    print("CHILD_RESULT " + json.dumps({**facts, "calls_s": times, "peak_rss_load_gib": loaded,
                                        "peak_rss_convert_gib": converted, "peak_rss_calls_gib": _peak_gib()}),
          flush=True)


if __name__ == "__main__":
    child()
