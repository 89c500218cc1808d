"""Load a diffusers model from one safetensors file a tensor at a time, converting (and optionally int8-quantizing)
each tensor as it is read.

diffusers memory-maps the whole file and converts from the mapping: while a component loads, the process holds the
file's pages and the converted copy at once (3.4 GB for SD 1.5's fp16 UNet loaded as bf16). Plain reads into one
buffer per tensor go through the page cache instead, which the process does not own, so the peak is the result plus
the largest tensor.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

# safetensors dtype codes (the format's README) → torch
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


TRIM_EVERY_BYTES = 64 * 2**20


class StreamLoadError(ValueError):
    """The file does not match the model built from its config; the caller falls back to diffusers' loader."""


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """({tensor name: {"dtype", "shape", "data_offsets"}}, byte offset where the data starts)."""
    with open(path, "rb") as f:
        try:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        except (struct.error, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise StreamLoadError(f"{path.name} has no readable safetensors header: {exc}") from exc
    header.pop("__metadata__", None)
    return header, 8 + length


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) in file order; each tensor owns a fresh buffer (nothing stays mapped)."""
    header, data_start = read_header(path)
    with open(path, "rb", buffering=0) as f:
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if info["dtype"] not in _DTYPES:
                raise StreamLoadError(f"{path.name}: tensor {name} has dtype {info['dtype']}, which is not read here")
            dtype, shape = _DTYPES[info["dtype"]], info["shape"]
            start, end = info["data_offsets"]
            if start == end:
                yield name, torch.empty(shape, dtype=dtype)
                continue
            buffer = bytearray(end - start)
            f.seek(data_start + start)
            view, done = memoryview(buffer), 0
            while done < len(buffer):
                n = f.readinto(view[done:])
                if not n:
                    raise StreamLoadError(f"{path.name} ends inside tensor {name}: the file is truncated")
                done += n
            yield name, torch.frombuffer(buffer, dtype=dtype).reshape(shape)


def converted_tensors(path: Path, dtype: torch.dtype,
                      channels_last: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """iter_tensors with floating tensors cast to `dtype` (4-D ones laid out channels_last if asked, so that
    converting the model later copies nothing), handing the freed read buffers back to the OS as it goes."""
    from sdart.speed.memory import release_freed_memory

    since_trim = 0
    for name, tensor in iter_tensors(path):
        since_trim += tensor.numel() * tensor.element_size()
        if since_trim > TRIM_EVERY_BYTES:  # conversion temporaries pile up in glibc's heap otherwise (0.5 GB)
            release_freed_memory(collect=False)
            since_trim = 0
        if tensor.is_floating_point():
            layout = torch.channels_last if channels_last and tensor.dim() == 4 else torch.contiguous_format
            tensor = tensor.to(dtype=dtype, memory_format=layout)
        yield name, tensor


def load_model(cls, config_dir: Path, weights: Path, dtype: torch.dtype, *, int8: bool = False,
               channels_last: bool = False, tensors: Iterable[tuple[str, torch.Tensor]] | None = None):
    """Build `cls` (a diffusers ModelMixin) from `config_dir`'s config on the meta device and fill it from `weights`.

    Tensors come from converted_tensors(weights, ...), or as `tensors` already converted (read ahead by
    sdart.models.prefetch). With `int8`, Linear/Conv2d weights become int8 as they arrive (sdart.quant), so the
    full-precision layer never exists. Raises StreamLoadError when the file's tensors are not exactly the model's.
    """
    from sdart.speed.quant import int8_replacement

    with torch.device("meta"):
        model = cls.from_config(cls.load_config(config_dir))
    expected = set(model.state_dict())
    for name, tensor in tensors if tensors is not None else converted_tensors(weights, dtype, channels_last):
        if name not in expected:
            raise StreamLoadError(f"{weights.name}: tensor {name} is not part of {cls.__name__}")
        expected.discard(name)
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        replacement = int8_replacement(module, tensor, dtype) if int8 and attr == "weight" else None
        if replacement is not None:
            model.set_submodule(module_name, replacement)
        else:
            _set_tensor(module, attr, tensor)
    if expected:
        raise StreamLoadError(f"{weights.name} lacks {len(expected)} of {cls.__name__}'s tensors, e.g. {sorted(expected)[0]}")
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise StreamLoadError(f"{cls.__name__} has state that is not saved in its weights file")
    return model.eval()


def _set_tensor(module: nn.Module, attr: str, tensor: torch.Tensor) -> None:
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(tensor)
    elif attr in module._buffers:
        module._buffers[attr] = tensor
    else:
        raise StreamLoadError(f"{type(module).__name__} has no parameter or buffer {attr!r}")
