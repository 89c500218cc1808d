"""Read a model's UNet and VAE weight files in a background thread while the process still imports diffusers.

A fresh process spends about 5 s importing diffusers and transformers before it can build the UNet (one core,
holding the GIL), and another 1.5 s reading and converting the UNet's and VAE's safetensors (SD 1.5's fp16 files
as bf16). Reading needs no diffusers, and file reads and tensor conversions release the GIL, so on a machine with
two cores the second job runs during the first. The tensors read ahead are those the model is then built from:
the process holds no more than it would have.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from pathlib import Path
from typing import Iterator

import torch

from sdart.models.streaming import converted_tensors

_END = object()  # a file's last item in its queue


class WeightPrefetch:
    """Reads `files` in order into one queue each, tensors converted as converted_tensors does."""

    def __init__(self, files: list[Path], dtype: torch.dtype, channels_last: bool):
        self._order = [(path, queue.SimpleQueue()) for path in files]  # the thread's own list
        self._queues = dict(self._order)  # what tensors() hands out, each once
        self._dtype, self._channels_last = dtype, channels_last
        self._stop = threading.Event()
        self._abandoned: set[Path] = set()  # files whose reader stopped early (refused the file): read no further
        self._thread = threading.Thread(target=self._read_all, name="sdart-weights-prefetch", daemon=True)
        self._thread.start()

    def tensors(self, path: Path) -> Iterator[tuple[str, torch.Tensor]] | None:
        """The converted tensors of `path` as they arrive (a read error is raised here, where the reader would have
        met it), or None if `path` was not read ahead (or was already taken)."""
        q = self._queues.pop(path, None)
        return None if q is None else self._drain(path, q)

    def close(self) -> None:
        """Stop reading and drop what was read ahead and not taken (the caller loaded those files otherwise)."""
        self._stop.set()
        self._thread.join()
        self._queues.clear()
        self._order.clear()

    def _read_all(self) -> None:
        _one_openmp_thread_here()
        for path, q in self._order:
            try:
                for item in converted_tensors(path, self._dtype, self._channels_last):
                    if self._stop.is_set() or path in self._abandoned:
                        break
                    q.put(item)
            except Exception as exc:  # noqa: BLE001 - handed to the reader, who falls back as without read-ahead
                q.put(exc)
            q.put(_END)
            if self._stop.is_set():
                return

    def _drain(self, path: Path, q: queue.SimpleQueue) -> Iterator[tuple[str, torch.Tensor]]:
        finished = False
        try:
            while (item := q.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
            finished = True
        finally:
            if not finished:
                self._abandoned.add(path)


def _one_openmp_thread_here() -> None:
    """Convert on this thread alone: the other core is importing diffusers, and an OpenMP team of two, one thread
    of it sharing that core, made the conversions take 3.6 s instead of 1.1 (py-spy on SD 1.5). omp_set_num_threads
    sets the calling thread's own team size (torch.set_num_threads would change every new thread's default too).
    Best effort: without torch's libgomp to call (macOS, Windows), the conversions use torch's threads."""
    torch.get_num_threads()  # torch sets this thread's team size on its first parallel call: let it do so first
    runtime = _loaded_libgomp()
    if runtime is not None:
        ctypes.CDLL(runtime).omp_set_num_threads(1)  # already loaded: the same library torch calls


def _loaded_libgomp() -> str | None:
    """The path of the GNU OpenMP runtime this process has loaded (torch's own copy, under whatever file name its
    wheel gave it), from /proc/self/maps; None where there is none or no /proc."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines() if "/libgomp" in line})
    return paths[0] if paths else None
