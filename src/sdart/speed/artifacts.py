"""The compiled-artifact store: one folder per (component, model, family, dtype, device kind and ISA, torch
version, input shapes, graph-changing options), under the cache folder.

An artifact is found only by the digest of everything it was built for, so a torch upgrade, another CPU kind,
another architecture or another option gives another digest: a stale artifact is never looked up, let alone
loaded; it is rebuilt, and `sdart cache list` marks the old one stale. The key is written beside the package and
checked again on load, so a damaged or hand-copied folder is refused too.

    <cache_dir>/artifacts/<component>-<digest>/key.json      what it was built for, its build time and size
                                              /package.pt2   the AOTInductor package
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when what sdart builds changes (the wrapper's inputs, the export options)
PACKAGE = "package.pt2"
KEY_FILE = "key.json"
# The CPU flags that change what Inductor generates (vector width, bf16/fp16/int8 instructions, AMX tiles).
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "sve")


def default_cache_dir() -> Path:
    """The user cache: $XDG_CACHE_HOME/sdart, else ~/.cache/sdart (where sdart keeps its model hashes too)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdart"


def device_kind(device) -> str:
    """What compiled code depends on about the device: the CPU's instruction sets, or the GPU's architecture."""
    import torch

    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda sm_{major}{minor} cuda {torch.version.cuda}"
    if device.type == "cpu":
        from sdart.speed.device import cpu_flags

        flags = cpu_flags()
        return "cpu " + " ".join(f for f in ISA_FLAGS if f in flags)
    return device.type


def runtime_versions() -> dict[str, str]:
    """Versions whose change makes an artifact stale: torch (the runtime and code generator) and diffusers (the
    traced model code)."""
    import diffusers
    import torch

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


@dataclass(frozen=True)
class ArtifactKey:
    """Everything a compiled component was built for. Weights are not part of it: they are handed to the compiled
    code when it loads (the loaded model's own tensors), so fine-tunes and LoRAs of one architecture share it."""

    component: str  # "unet", "vae-decoder"
    family: str  # sd1, sd2, sdxl
    architecture: str  # digest of the component's config (a changed model architecture: another artifact)
    dtype: str
    device: str  # device_kind()
    inputs: tuple[tuple[int, ...], ...]  # input shapes, e.g. ((2, 4, 64, 64), (), (2, 77, 768))
    options: tuple[tuple[str, Any], ...]  # graph-changing speed options, sorted by name
    versions: tuple[tuple[str, str], ...] = field(default_factory=lambda: tuple(sorted(runtime_versions().items())))
    format: int = FORMAT

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [list(shape) for shape in self.inputs]
        data["options"] = dict(self.options)
        data["versions"] = dict(self.versions)
        return data

    @property
    def digest(self) -> str:
        text = json.dumps(self.as_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def folder_name(self) -> str:
        return f"{self.component}-{self.digest}"

    def describe(self) -> str:
        """'unet 2×4×64×64 bfloat16' – for progress lines and logs."""
        return f"{self.component} {'×'.join(map(str, self.inputs[0]))} {self.dtype}"


def config_digest(config) -> str:
    """Digest of a diffusers model config (FrozenDict or dict); private `_` keys (paths, versions) left out."""
    clean = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Artifact:
    """One folder of the store, as found on disk."""

    folder: Path
    key: dict[str, Any]
    build_s: float | None
    created: float | None
    size_bytes: int

    @property
    def package(self) -> Path:
        return self.folder / PACKAGE

    def stale_reasons(self, device_kinds: set[str] | None = None) -> list[str]:
        """Why this process would never load it (empty: current)."""
        reasons = []
        if self.key.get("format") != FORMAT:
            reasons.append(f"format {self.key.get('format')} (now {FORMAT})")
        for name, now in runtime_versions().items():
            then = self.key.get("versions", {}).get(name)
            if then != now:
                reasons.append(f"{name} {then} (now {now})")
        if device_kinds is not None and self.key.get("device") not in device_kinds:
            reasons.append(f"built for {self.key.get('device')}")
        return reasons


class ArtifactStore:
    """The artifacts folder: find by key, save atomically, list, clear."""

    def __init__(self, cache_dir: Path | None = None):
        self.root = Path(cache_dir or default_cache_dir()) / "artifacts"

    def folder(self, key: ArtifactKey) -> Path:
        return self.root / key.folder_name

    def find(self, key: ArtifactKey) -> Artifact | None:
        """The artifact built for exactly `key`, or None (never one built for anything else)."""
        folder = self.folder(key)
        artifact = self._read(folder)
        if artifact is None:
            return None
        if artifact.key != key.as_json():
            log.warning("compiled artifact %s does not hold what its name says; ignoring it", folder)
            return None
        return artifact

    def save(self, key: ArtifactKey, package: Path, build_s: float) -> Artifact:
        """Move a built package into the store; the folder appears whole or not at all."""
        final = self.folder(key)
        partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.move(str(package), partial / PACKAGE)
        meta = {"key": key.as_json(), "build_s": round(build_s, 1), "created": time.time()}
        (partial / KEY_FILE).write_text(json.dumps(meta, indent=1))
        shutil.rmtree(final, ignore_errors=True)  # a broken one of the same key
        partial.rename(final)
        artifact = self._read(final)
        assert artifact is not None
        return artifact

    def discard(self, key: ArtifactKey) -> None:
        shutil.rmtree(self.folder(key), ignore_errors=True)

    def entries(self) -> Iterator[Artifact]:
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            artifact = self._read(folder)
            if artifact is not None:
                yield artifact

    def last_build_s(self, component: str, device: str) -> float | None:
        """Seconds the latest build of this component on this device kind took: the ETA of the next one."""
        builds = [a for a in self.entries() if a.key.get("component") == component and a.key.get("device") == device
                  and a.build_s]
        return max(builds, key=lambda a: a.created or 0).build_s if builds else None

    def clear(self, *, stale_only: bool = False, device_kinds: set[str] | None = None) -> list[Path]:
        """Remove artifacts (only the stale ones with `stale_only`) and leftovers of interrupted builds; a build
        still running (its process alive) keeps its folder and files."""
        removed = []
        if not self.root.is_dir():
            return removed
        for path in sorted(self.root.iterdir()):
            pid = _build_pid(path)
            if pid is not None and _alive(pid):
                continue
            if path.is_dir():
                artifact = self._read(path)
                if stale_only and artifact is not None and not artifact.stale_reasons(device_kinds):
                    continue
                shutil.rmtree(path, ignore_errors=True)
            elif pid is not None:  # the package file an interrupted build was writing
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(path)
        return removed

    @staticmethod
    def _read(folder: Path) -> Artifact | None:
        if ".partial-" in folder.name:
            return None
        try:
            meta = json.loads((folder / KEY_FILE).read_text())
            size = (folder / PACKAGE).stat().st_size
        except (OSError, ValueError):
            return None
        return Artifact(folder, meta.get("key", {}), meta.get("build_s"), meta.get("created"), size)


def _build_pid(path: Path) -> int | None:
    """The process of the build that writes `path`: its package file ("<key>.<pid>.pt2", sdart.speed.builder) or the
    folder save() renames into place ("<key>.partial-<pid>"); None for anything else."""
    if path.is_dir():
        _, marker, pid = path.name.rpartition(".partial-")
    elif path.suffix == ".pt2":
        _, marker, pid = path.name.removesuffix(".pt2").rpartition(".")
    else:
        return None
    return int(pid) if marker and pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
