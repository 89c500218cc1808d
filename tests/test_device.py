import pytest
import torch

from sdart import device as dev


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
