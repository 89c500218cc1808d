"""Textual-inversion embeddings: a folder of `.pt`, `.bin` and `.safetensors` files, each word of vectors named by
its file's stem (A1111's rule), kept or skipped by whether their widths fit the loaded model's text encoders.

Layouts read (as A1111 `modules/textual_inversion/textual_inversion.py` `create_embedding_from_data` reads them):
A1111's own (`{"string_to_param": {"*": (n, width)}, "step": …, "sd_checkpoint": …}`), SDXL's (`{"clip_l": (n, 768),
"clip_g": (n, 1280)}`) and any file holding one tensor (diffusers' `{token: tensor}`, kohya's `{"emb_params": …}`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SINGLE = ""  # the encoder key of a file made for a model with one text encoder (SD 1.x, SD 2.x)
SDXL_KEYS = ("clip_l", "clip_g")  # SDXL's first (CLIP-L) and second (OpenCLIP bigG) text encoder
SUFFIXES = (".pt", ".bin", ".safetensors")
MAX_VECTORS = 75  # one chunk: an embedding is never split across chunks


@dataclass(frozen=True, eq=False)
class Embedding:
    """One embedding file: its vectors per text encoder key, (n, width) each."""

    name: str
    path: Path
    vectors: Mapping[str, torch.Tensor]
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def count(self) -> int:
        """Vectors per use: how many token positions the word takes in a chunk."""
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def shape(self) -> int:
        """A1111's `shape`: the width of one vector, summed over the text encoders."""
        return sum(int(tensor.shape[-1]) for tensor in self.vectors.values())

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the file (A1111 hashes embeddings the same way)."""
        from sdart.models.load import file_sha256

        return file_sha256(self.path)

    @property
    def shorthash(self) -> str:
        """What A1111's infotext writes under `TI hashes`: the first 12 hex digits."""
        return self.hash[:12]

    def api_fields(self) -> dict[str, Any]:
        """One entry of A1111's /sdapi/v1/embeddings."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint, "sd_checkpoint_name": self.sd_checkpoint_name,
                "shape": self.shape, "vectors": self.count}


def _read_file(path: Path) -> Mapping[str, Any]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    # weights_only: an embedding is tensors, numbers and strings; a pickle asking for anything else is refused.
    return torch.load(path, map_location="cpu", weights_only=True)


def _vectors_of(data: Any) -> dict[str, torch.Tensor]:
    """The file's vectors per encoder key; ValueError says why a file is not an embedding."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError("not an embedding: the file holds no dictionary of tensors")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            raise ValueError("`string_to_param` must hold exactly one entry")
        tensors = {SINGLE: next(iter(params.values()))}
    elif all(key in data for key in SDXL_KEYS):
        tensors = {key: data[key] for key in SDXL_KEYS}
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        tensors = {SINGLE: next(iter(data.values()))}
    else:
        raise ValueError("not an embedding: expected `string_to_param`, `clip_l` + `clip_g`, or a single tensor, "
                         f"found keys {sorted(map(str, data))[:6]}")
    vectors = {}
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2) or tensor.numel() == 0:
            raise ValueError(f"the vectors must be a (count, width) tensor, got {type(tensor).__name__}"
                             f"{tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ''}")
        vectors[key] = tensor.detach().reshape(-1, tensor.shape[-1]).to(torch.float32)
    counts = {int(tensor.shape[0]) for tensor in vectors.values()}
    if len(counts) != 1:
        raise ValueError(f"`clip_l` and `clip_g` hold different numbers of vectors: {sorted(counts)}")
    if counts.pop() > MAX_VECTORS:
        raise ValueError(f"more than {MAX_VECTORS} vectors do not fit in one chunk")
    return vectors


def read_embedding(path: str | Path) -> Embedding:
    """One embedding file; ValueError (or OSError) says why it cannot be used."""
    path = Path(path)
    try:
        data = _read_file(path)
    except OSError:
        raise
    except Exception as error:  # torch's unpickler and safetensors raise their own types
        raise ValueError(f"cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
    vectors = _vectors_of(data)

    def text(key: str) -> str | None:
        value = data.get(key)
        return None if value is None else str(value)

    step = data.get("step")
    return Embedding(path.stem, path, vectors, step=int(step) if isinstance(step, (int, float)) else None,
                     sd_checkpoint=text("sd_checkpoint"), sd_checkpoint_name=text("sd_checkpoint_name"))


def fits(embedding: Embedding, widths: Mapping[str, int]) -> bool:
    """Whether the model (its text encoders' widths by key) can use the embedding."""
    if set(embedding.vectors) == {SINGLE}:
        return set(widths) == {SINGLE} and int(embedding.vectors[SINGLE].shape[-1]) == widths[SINGLE]
    return SINGLE not in widths and all(
        key in embedding.vectors and int(embedding.vectors[key].shape[-1]) == width for key, width in widths.items())


@dataclass
class Embeddings:
    """The embeddings of a folder for one model: `loaded` can be used, `skipped` do not fit it (A1111's
    /sdapi/v1/embeddings), `failed` are files that could not be read (file name → reason)."""

    directory: Path | None = None
    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, Embedding] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def scan(cls, directory: str | Path, widths: Mapping[str, int]) -> Embeddings:
        """Read every embedding file under `directory` (sub-folders included, sorted; the first file of a name
        wins) and sort it into loaded or skipped for a model with these text-encoder widths."""
        found = cls(Path(directory))
        for path in _embedding_files(found.directory):
            if path.stem in found.loaded or path.stem in found.skipped:
                found.failed[str(path)] = f"another file already gives the word {path.stem!r}"
                log.warning("embedding %s skipped: another file already gives the word %r", path, path.stem)
                continue
            try:
                embedding = read_embedding(path)
            except (OSError, ValueError) as error:
                found.failed[str(path)] = str(error)
                log.warning("embedding %s skipped: %s", path, error)
                continue
            if fits(embedding, widths):
                found.loaded[embedding.name] = embedding
            else:
                found.skipped[embedding.name] = embedding
                log.warning("embedding %s skipped: its vectors are %s wide, the loaded model's text encoders %s",
                            path, _describe(embedding.vectors), _describe_widths(widths))
        if found.loaded:
            log.info("embeddings from %s: %s", found.directory, ", ".join(found.loaded))
        return found

    def api(self) -> dict[str, dict[str, dict[str, Any]]]:
        """A1111's /sdapi/v1/embeddings body."""
        return {"loaded": {name: e.api_fields() for name, e in self.loaded.items()},
                "skipped": {name: e.api_fields() for name, e in self.skipped.items()}}


def _embedding_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"embeddings_dir {str(directory)!r} is not a folder")
    files = []
    for root, _, names in os.walk(directory, followlinks=True):
        for name in names:
            path = Path(root) / name
            if path.suffix.lower() in SUFFIXES and not name.startswith(".") and path.stat().st_size > 0:
                files.append(path)
    return sorted(files)


def folder_signature(directory: str | Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file under the folder is added, removed or rewritten (so the folder is read again)."""
    stats = ((p, p.stat()) for p in _embedding_files(Path(directory)))
    return tuple((str(p), stat.st_size, stat.st_mtime_ns) for p, stat in stats)


def _describe(vectors: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{key or 'single'} {int(t.shape[-1])}" for key, t in vectors.items())


def _describe_widths(widths: Mapping[str, int]) -> str:
    return ", ".join(f"{key or 'single'} {width}" for key, width in widths.items())


class EmbeddingFolder:
    """An embeddings folder, read again whenever a file in it is added, removed or rewritten (A1111 re-reads its
    folder before each generation too), sorted for the model being used."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"embeddings_dir {str(self.directory)!r} is not a folder")
        self._signature: Any = None
        self._sorted: dict[tuple, Embeddings] = {}  # per encoder widths (a base and its refiner differ)

    def for_model(self, widths: Mapping[str, int]) -> Embeddings:
        signature = folder_signature(self.directory)
        if signature != self._signature:
            self._signature, self._sorted = signature, {}
        key = tuple(sorted(widths.items()))
        if key not in self._sorted:
            self._sorted[key] = Embeddings.scan(self.directory, widths)
        return self._sorted[key]
