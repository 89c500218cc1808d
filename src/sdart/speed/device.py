"""Device and precision choice: cuda > mps > cpu, and bf16 on CPUs that run it natively."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def pick_device(requested: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"device = {requested!r}: not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device = {requested!r}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device = {requested!r}: MPS is not available on this machine")
    return device


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively (on this project's 2-core EPYC one SD 1.5 UNet call takes
    3.83 s in bf16, 3.54 s with channels_last + fused QKV, against 6.72 s in fp32; benchmarks/RESULTS.md).
    Without them bf16 is emulated and slower."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    name = DTYPE_ALIASES.get(requested, requested)
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype = {requested!r}: use auto, float32, float16 or bfloat16")
        if device.type == "cpu" and name == "float16":
            raise ValueError("dtype = 'float16': half precision is not supported for CPU inference; use bfloat16 or float32")
        return DTYPES[name]
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32



