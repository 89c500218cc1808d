"""The `sdart cache` commands: list and clear the compiled artifacts (sdart.speed.artifacts)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from sdart.cli.common import out

cache = typer.Typer(help="The compiled artifacts kept under the cache folder (SDART_CACHE_DIR).", no_args_is_help=True)

CacheDir = typer.Option(None, "--cache-dir", help="The cache folder \\[default: ~/.cache/sdart] \\[env: SDART_CACHE_DIR].")


def _store(cache_dir: Path | None):
    from sdart.settings import load_settings
    from sdart.speed.artifacts import ArtifactStore

    return ArtifactStore(load_settings(cache_dir=cache_dir).cache_dir)


def _this_machine() -> set[str]:
    """The device kinds this process could load artifacts for: the CPU, and each GPU."""
    import torch

    from sdart.speed.artifacts import device_kind

    kinds = {device_kind(torch.device("cpu"))}
    if torch.cuda.is_available():
        kinds |= {device_kind(torch.device("cuda", i)) for i in range(torch.cuda.device_count())}
    return kinds


@cache.command("list")
def list_artifacts(
    cache_dir: Optional[Path] = CacheDir,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable entries on stdout."),
) -> None:
    """List the compiled artifacts: what each was built for, its size, and whether this machine would load it."""
    store = _store(cache_dir)
    kinds = _this_machine()
    rows = []
    for artifact in store.entries():
        key = artifact.key
        rows.append({"folder": str(artifact.folder), "component": key.get("component"), "family": key.get("family"),
                     "inputs": key.get("inputs"), "dtype": key.get("dtype"), "device": key.get("device"),
                     "versions": key.get("versions"), "options": key.get("options"), "size_bytes": artifact.size_bytes,
                     "build_s": artifact.build_s, "created": artifact.created,
                     "stale": artifact.stale_reasons(kinds)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no compiled artifacts in {escape(str(store.root))}", highlight=False)
        return
    for row in rows:
        shape = "×".join(map(str, row["inputs"][0])) if row["inputs"] else "?"
        state = f"[yellow]stale: {escape('; '.join(row['stale']))}[/]" if row["stale"] else "[green]current[/]"
        age = _age(row["created"])
        out.print(f"{row['component']:<12} {row['family']:<5} {shape:<14} {row['dtype']:<9} "
                  f"{row['size_bytes'] / 2**20:7.1f} MiB  built in {row['build_s'] or 0:.0f} s, {age}  {state}",
                  highlight=False)
    total = sum(r["size_bytes"] for r in rows)
    out.print(f"[dim]{len(rows)} artifact(s), {total / 2**20:.1f} MiB in {escape(str(store.root))}[/]", highlight=False)


@cache.command("clear")
def clear_artifacts(
    cache_dir: Optional[Path] = CacheDir,
    stale: bool = typer.Option(False, "--stale", help="Remove only the artifacts this machine would not load."),
) -> None:
    """Remove compiled artifacts (all of them, or only the stale ones); they are rebuilt when needed."""
    store = _store(cache_dir)
    sizes = {a.folder: a.size_bytes for a in store.entries()}
    removed = store.clear(stale_only=stale, device_kinds=_this_machine())
    freed = sum(sizes.get(folder, 0) for folder in removed)
    out.print(f"removed {len(removed)} artifact folder(s), {freed / 2**20:.1f} MiB", highlight=False)


def _age(created: float | None) -> str:
    if not created:
        return "?"
    hours = (time.time() - created) / 3600
    return f"{hours * 60:.0f} min ago" if hours < 1 else f"{hours:.0f} h ago" if hours < 48 else f"{hours / 24:.0f} days ago"
