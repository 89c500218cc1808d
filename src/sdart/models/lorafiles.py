"""The LoRA folder (`--lora-dir`, A1111's `models/Lora`): `.safetensors` files found by name, in subfolders too.

A file's name is its stem (`styles/ink.safetensors` is `ink`); its alias is the `ss_output_name` kohya's trainer
writes into the metadata, and a prompt may use either (A1111's `networks.list_available_networks`). The short hash
in the infotext's `Lora hashes` is A1111's: the first 12 hex digits of the "addnet" hash, the SHA-256 of the file
after its safetensors header (kohya-ss `train_util`), so re-saving the metadata keeps it; a `sshs_model_hash`
in the metadata is taken as the hash.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

from sdart.models.load import file_sha256

log = logging.getLogger(__name__)

SHORT_HASH = 12  # hex digits A1111 writes in `Lora hashes`
# Names A1111 never takes as an alias: "none" means no LoRA in its UI, "Addams" is a LoRA named like an old option.
FORBIDDEN_ALIASES = ("none", "addams")


class LoraNotFound(LookupError):
    """A `<lora:NAME>` tag whose NAME is no file in the folder; str() names both."""

    def __init__(self, names: list[str], folder: Path | None):
        self.names = names
        if folder is None:
            where = "anywhere: no LoRA folder is set (--lora-dir, SDART_LORA_DIR)"
        else:
            where = f"in the LoRA folder {folder}" + ("" if folder.is_dir() else " (no such folder)")
        super().__init__(f"no LoRA named {', '.join(repr(n) for n in names)} {where}")


@dataclass
class LoraFile:
    name: str  # the file's stem
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)
    signature: tuple[int, int] = (0, 0)  # the file's (size, mtime) when its metadata was read

    @property
    def alias(self) -> str:
        return self.metadata.get("ss_output_name") or self.name

    @property
    def hash(self) -> str:
        """A1111's LoRA hash (sha256 of the tensors after the header), or the one the trainer recorded."""
        return self.metadata.get("sshs_model_hash") or file_sha256(self.path, skip=_header_bytes(self.path))

    @property
    def short_hash(self) -> str:
        return self.hash[:SHORT_HASH]

    def listing(self) -> dict:
        """A1111's /sdapi/v1/loras entry."""
        return {"name": self.name, "alias": self.alias, "path": str(self.path), "metadata": self.metadata}


def _header_bytes(path: Path) -> int:
    """The length of a safetensors file's header: an 8-byte little-endian size, then that much JSON."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
    return 8 + size


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors header (kohya writes its training settings there); {} if unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
    except (OSError, SafetensorError, ValueError):
        return {}
    metadata.pop("ssmd_cover_images", None)  # embedded cover pictures: large, and no setting (A1111 drops them too)
    return metadata


class LoraFolder:
    """The LoRA files of one folder, listed once and again on `refresh()` (A1111's /sdapi/v1/refresh-loras)."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder).expanduser() if folder else None
        self._files: dict[str, LoraFile] = {}
        self._aliases: dict[str, LoraFile] = {}
        self.refresh()

    def refresh(self) -> None:
        # Built aside and swapped in at once: a server's request threads look names up while a refresh runs.
        self._files, self._aliases = self._scan()

    def _scan(self) -> tuple[dict[str, LoraFile], dict[str, LoraFile]]:
        files: dict[str, LoraFile] = {}
        if self.folder is None:
            return {}, {}
        if not self.folder.is_dir():
            log.warning("the LoRA folder %s does not exist", self.folder)
            return {}, {}
        # A prompt's missing tags each list the folder again: an unchanged file costs a stat, not a header read.
        known = {entry.path: entry for entry in self._files.values()}
        for path in sorted(self.folder.rglob("*")):
            suffix = path.suffix.lower()
            if suffix in (".pt", ".ckpt", ".bin") and path.is_file():
                log.warning("LoRA %s skipped: only .safetensors files are read (pickled files can run code)", path)
            if suffix != ".safetensors" or not path.is_file():
                continue
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime_ns)
            entry = known.get(path)
            if entry is None or entry.signature != signature:
                entry = LoraFile(path.stem, path, read_metadata(path), signature)
            if entry.name in files:
                log.warning("two LoRA files named %r: %s is used, %s is not", entry.name, files[entry.name].path, path)
                continue
            files[entry.name] = entry
        aliases: dict[str, LoraFile | None] = {}
        for entry in files.values():
            alias = entry.alias
            if alias != entry.name and alias not in files and alias.lower() not in FORBIDDEN_ALIASES:
                aliases[alias] = None if alias in aliases else entry  # an alias two files share names neither
        return files, {alias: entry for alias, entry in aliases.items() if entry is not None}

    def __iter__(self):
        return iter(self._files.values())

    def __len__(self) -> int:
        return len(self._files)

    def find(self, name: str) -> LoraFile | None:
        """By file name, then by alias; the folder is listed again once before a name counts as missing (a file
        copied in after the start is found, as in A1111)."""
        entry = self._files.get(name) or self._aliases.get(name)
        if entry is None and self.folder is not None:
            self.refresh()
            entry = self._files.get(name) or self._aliases.get(name)
        return entry

    def find_by_hash(self, short_hash: str) -> LoraFile | None:
        """The file whose short hash this is (an infotext's `Lora hashes` names a renamed file by it)."""
        short_hash = short_hash.lower()[:SHORT_HASH]
        return next((entry for entry in self if entry.short_hash.lower() == short_hash), None) if short_hash else None

    def listing(self) -> list[dict]:
        return [entry.listing() for entry in self]
