import pytest
import torch

from sdart.speed import device as dev
from sdart.speed import memory as memory_module


def test_cpu_dtype_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert dev.pick_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(dev, "cpu_flags", lambda: {"avx2", "fma"})
    assert dev.pick_dtype("auto", cpu) == torch.float32


def test_gpu_defaults_to_half_and_explicit_dtypes_win():
    assert dev.pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert dev.pick_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    assert dev.pick_dtype("float32", torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("bad, phrase", [("float8", "use auto, float32"), ("float16", "not supported for CPU")])
def test_bad_dtype_is_explained(bad, phrase):
    with pytest.raises(ValueError, match=phrase):
        dev.pick_dtype(bad, torch.device("cpu"))


def test_device_choice():
    assert dev.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert dev.pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            dev.pick_device("cuda")
    with pytest.raises(ValueError, match="not a device name"):
        dev.pick_device("toaster")


class _RecordingLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, option, value):
        self.calls.append(("mallopt", option, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.mark.parametrize("memory, fixed_threshold", [("low", True), ("balanced", False)])
def test_low_memory_on_cpu_returns_freed_blocks_to_the_os(tiny_model_dir, monkeypatch, memory, fixed_threshold):
    """--memory low on the CPU fixes glibc's mmap threshold before loading (freed activations leave the process
    instead of fragmenting its heap) and trims the heap after every step; balanced keeps glibc's own tuning and
    trims once, before the decode."""
    from sdart.engine import Engine
    from sdart.settings import Settings

    libc = _RecordingLibc()
    monkeypatch.setattr(memory_module, "_glibc", lambda: libc)
    engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", memory=memory))
    assert (("mallopt", -3, memory_module.LOW_MEMORY_MMAP_THRESHOLD) in libc.calls) == fixed_threshold
    libc.calls.clear()
    engine.generate(prompt="a fox", steps=3, seed=0, progress=False)
    assert libc.calls.count(("malloc_trim", 0)) == (3 if fixed_threshold else 1)
