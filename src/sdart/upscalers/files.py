"""Upscaler model files: found by name in the upscalers folder, loaded with spandrel.

The folder (`--upscaler-dir`, setting `upscaler_dir`, env `SDART_UPSCALER_DIR`) holds `.pth`, `.pt` and
`.safetensors` files, directly or in subfolders, as A1111's `models/ESRGAN`, `models/RealESRGAN`,
`models/SwinIR` and `models/DAT` do; subfolders A1111 keeps other kinds of model in (Stable-diffusion, Lora,
VAE, …) are skipped, so A1111's whole `models/` folder can be given too. A model's name is its file's stem, as
in A1111 (`4x-UltraSharp`); when two files share a stem, each is named by its path in the folder
(`ESRGAN/x`, `DAT/x`). A1111's names for its built-in downloads (`R-ESRGAN 4x+`, `SwinIR 4x`, `DAT x4`, …) find
those files when they are in the folder, so infotexts written by A1111 resolve.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

SUFFIXES = (".pth", ".pt", ".safetensors")
# A1111 model folders that hold no upscalers (compared in lower case).
NOT_UPSCALER_FOLDERS = frozenset({"stable-diffusion", "lora", "lycoris", "vae", "vae-approx", "embeddings",
                                  "hypernetworks", "controlnet", "ldsr", "gfpgan", "codeformer", "blip",
                                  "deepbooru", "torch_deepdanbooru", "karlo", "diffusers", "text_encoder", "unet"})
# A1111's names for the upscalers it downloads itself → the stem of the file it saves (modules/realesrgan_model.py,
# dat_model.py, esrgan_model.py, extensions-builtin/SwinIR).
A1111_BUILTIN_NAMES = {
    "R-ESRGAN General 4xV3": "realesr-general-x4v3",
    "R-ESRGAN General WDN 4xV3": "realesr-general-wdn-x4v3",
    "R-ESRGAN AnimeVideo": "realesr-animevideov3",
    "R-ESRGAN 4x+": "RealESRGAN_x4plus",
    "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
    "R-ESRGAN 2x+": "RealESRGAN_x2plus",
    "ESRGAN_4x": "ESRGAN_4x",
    "SwinIR 4x": "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN",
    "DAT x2": "DAT_x2",
    "DAT x3": "DAT_x3",
    "DAT x4": "DAT_x4",
}
# The factor a file's name states ("4x-UltraSharp", "RealESRGAN_x2plus"): A1111's UI reads it the same way.
_SCALE_IN_NAME = re.compile(r"(\d)[xX]|[xX](\d)")


class UpscalerError(ValueError):
    """An upscaler name that names nothing, or a file that is not an upscaler; the message says which and why.
    `field`: the input it is about, where the raiser knows it (e.g. "upscaler_2")."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class UpscalerFile:
    name: str  # what requests, the CLI and infotexts use
    path: Path

    @property
    def scale_in_name(self) -> int | None:
        """The factor the file's name states, if any (the true one is known once the model loads)."""
        match = _SCALE_IN_NAME.search(self.path.stem)
        return int(match.group(1) or match.group(2)) if match else None


def list_upscaler_files(folder: str | Path | None) -> list[UpscalerFile]:
    """The upscaler files under `folder`, sorted by name (case-insensitive, as A1111 sorts them)."""
    if folder is None:
        return []
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise UpscalerError(f"upscaler_dir = {str(root)!r}: no such folder")
    paths = sorted(p for p in _walk(root) if p.suffix.lower() in SUFFIXES and p.is_file())
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    files = [UpscalerFile(path.stem if stems[path.stem] == 1 else path.relative_to(root).with_suffix("").as_posix(),
                          path) for path in paths]
    return sorted(files, key=lambda f: f.name.lower())


def _walk(folder: Path):
    for entry in folder.iterdir():
        if entry.is_dir():
            if entry.name.lower() not in NOT_UPSCALER_FOLDERS and not entry.name.startswith("."):
                yield from _walk(entry)
        else:
            yield entry


def find_upscaler_file(folder: str | Path | None, name: str, builtin_names: tuple[str, ...] = ()) -> UpscalerFile:
    """The file `name` stands for: its name, its file name, its path in the folder, or A1111's name for it.
    UpscalerError lists what there is otherwise (`builtin_names`: the names that need no file, for that list)."""
    files = list_upscaler_files(folder)
    wanted = A1111_BUILTIN_NAMES.get(name, name)
    for file in files:
        relative = file.path.relative_to(Path(folder).expanduser().absolute()).as_posix()  # type: ignore[arg-type]
        if wanted in (file.name, file.path.stem, file.path.name, relative, relative.rsplit(".", 1)[0]):
            return file
    known = [*builtin_names, *(f.name for f in files)]
    where = (f"in the upscalers folder ({Path(folder).expanduser().absolute()})" if folder is not None
             else "(no upscalers folder is set: --upscaler-dir or SDART_UPSCALER_DIR)")
    raise UpscalerError(f"upscaler {name!r}: no such upscaler {where}; available: {', '.join(known)}")


_load_lock = threading.Lock()


def load_upscaler(path: str | Path, device: torch.device, dtype: str = "auto") -> ImageModelDescriptor:
    """The model in `path` on `device`, in eval mode, in `dtype` ("auto": the device's fast precision where the
    architecture allows it, see `choose_dtype`); the last two loaded are kept for the next calls. UpscalerError when
    the file is not an image-to-image model spandrel can load here."""
    path = Path(path)
    stat = path.stat()
    with _load_lock:  # one load at a time: two threads asking for the same file share the result
        return _load_cached(path.absolute(), stat.st_mtime_ns, stat.st_size, str(device), dtype)


@lru_cache(maxsize=2)  # the extras tab's upscaler_1 and upscaler_2, picture after picture
def _load_cached(path: Path, mtime_ns: int, size: int, device: str, dtype: str) -> ImageModelDescriptor:
    import torch

    descriptor = read_model(path)
    target = torch.device(device)
    return prepare(descriptor, target, choose_dtype(descriptor, target, dtype, path))


def prepare(descriptor: Any, device: torch.device, dtype: torch.dtype, channels_last: bool = True) -> Any:
    """The model on `device` in `dtype`, in eval mode; its convolutions' weights channels-last (NHWC) on CPU and
    CUDA, where oneDNN and cuDNN run them faster (RRDBNet x4plus in bfloat16 on a CPU: benchmarks/NOTES.md)."""
    import torch

    descriptor = descriptor.to(device, dtype=dtype).eval()
    if channels_last and device.type in ("cpu", "cuda"):
        descriptor.model.to(memory_format=torch.channels_last)
    return descriptor


def choose_dtype(descriptor: Any, device: torch.device, requested: str = "auto", path: Path | None = None) -> torch.dtype:
    """`requested`, or for "auto" the device's fast precision (sdart.speed.device.pick_dtype: float16 on a GPU,
    bfloat16 on a CPU that has it natively, else float32) as far as the architecture supports it (spandrel's
    `supports_half` / `supports_bfloat16`); float32 otherwise."""
    import torch

    from sdart.speed.device import pick_dtype

    chosen = pick_dtype(requested, device)
    supported = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    if requested != "auto":
        if not supported.get(chosen, True):
            raise UpscalerError(f"dtype = {requested!r}: {path or 'this model'} is a {descriptor.architecture.name} "
                                f"model, which does not run in {requested}; use auto or float32")
        return chosen
    if chosen == torch.float16 and not descriptor.supports_half:
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        chosen = torch.bfloat16 if bf16_ok else torch.float32
    if chosen == torch.bfloat16 and not descriptor.supports_bfloat16:
        chosen = torch.float32
    return chosen


def release_upscalers() -> None:
    """Drop the kept model (its memory is returned once nothing else holds it)."""
    with _load_lock:
        _load_cached.cache_clear()


def read_model(path: Path) -> ImageModelDescriptor:
    """spandrel's `ModelLoader` on `path` (on the CPU, in the file's precision); UpscalerError names the file."""
    from sdart.upscalers.arches import spandrel, unavailable_note

    try:
        library = spandrel()
    except ImportError as exc:
        raise UpscalerError(f"{path}: upscaler models need spandrel, which does not import: {exc}") from None
    loader = library.ModelLoader(device="cpu")
    try:
        state_dict = loader.load_state_dict_from_file(path)
    except Exception as exc:  # a pickle of arbitrary objects, a truncated file, a text file named .pth, …
        raise UpscalerError(f"{path}: not a model file spandrel can read ({_first_line(exc)})") from None
    try:
        descriptor = loader.load_from_state_dict(state_dict)
    except library.UnsupportedModelError:
        note = unavailable_note()
        raise UpscalerError(f"{path}: not an upscaler model: spandrel {library.__version__} recognises no "
                            f"architecture in it{f' ({note})' if note else ''}") from None
    except Exception as exc:  # an architecture was detected but its weights don't fit it
        raise UpscalerError(f"{path}: looks like a model spandrel knows but does not load ({_first_line(exc)})") from None
    _check_image_model(path, descriptor, library)
    return descriptor


def _check_image_model(path: Path, descriptor: Any, library: Any) -> None:
    if not isinstance(descriptor, library.ImageModelDescriptor):
        raise UpscalerError(f"{path}: a {descriptor.architecture.name} model for {descriptor.purpose.lower()}, which "
                            "needs a mask: not an upscaler")
    if descriptor.purpose == "FaceSR":
        raise UpscalerError(f"{path}: a {descriptor.architecture.name} face restoration model (it works on aligned "
                            "face crops), not an upscaler")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
