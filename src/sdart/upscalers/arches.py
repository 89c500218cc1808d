"""spandrel, imported whole when it can be, and otherwise with every architecture that imports.

spandrel builds its registry (`MAIN_REGISTRY`) of ~40 architectures when it is imported; two of them,
RestoreFormer and LaMa, import torchvision there. Where torchvision is missing, or is a build for another
torch (PyPI's Linux torchvision is built against CUDA torch: beside a CPU torch `import torchvision` fails with
"operator torchvision::nms does not exist"), `import spandrel` fails as a whole, although the ESRGAN family,
SwinIR, HAT, DAT, SPAN, … never touch torchvision.

`spandrel()` then imports spandrel's own architecture modules one by one, in the order spandrel's
`main_registry.py` adds them (read from that file, so it follows the installed version), puts those that import
into a real `ArchRegistry`, and lets spandrel's `__init__` run on top of it: `spandrel.ModelLoader` and every
architecture class are spandrel's own, only the ones that could not import are missing, and
`unavailable_architectures()` says why each one is. docs/upscalers.md tells the whole story.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
import threading
import types
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: types.ModuleType | None = None
_unavailable: dict[str, str] = {}


def spandrel() -> types.ModuleType:
    """The spandrel module, with as many architectures as this installation can import."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _import()
        return _loaded


def unavailable_architectures() -> dict[str, str]:
    """Architecture id → why it cannot load here (empty when spandrel imported whole)."""
    spandrel()
    return dict(_unavailable)


def unavailable_note() -> str:
    """One sentence naming the architectures that cannot load here and why, or "" when all can."""
    missing = unavailable_architectures()
    if not missing:
        return ""
    reasons = sorted(set(missing.values()))
    return (f"{' and '.join(sorted(missing))} cannot load here ({'; '.join(reasons)}); install the torchvision "
            "built for this torch (scripts/install.sh does) to enable them")


def _import() -> types.ModuleType:
    if importlib.util.find_spec("spandrel") is None:
        raise ImportError("spandrel is not installed (pip install 'spandrel>=0.4.2,<0.5'; scripts/install.sh does)")
    try:
        import spandrel as whole

        return whole
    except Exception as exc:  # ImportError without torchvision; RuntimeError with a torchvision for another torch
        first_failure = exc
    log.info("spandrel did not import whole (%s: %s); loading its architectures one by one",
             type(first_failure).__name__, first_failure)
    return _import_architectures_one_by_one()


def _import_architectures_one_by_one() -> types.ModuleType:
    _forget_partial_imports()
    spec = importlib.util.find_spec("spandrel")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    # 1. A bare package object (its __init__ not run), so that spandrel's submodules can be imported.
    sys.modules["spandrel"] = importlib.util.module_from_spec(spec)
    try:
        registry_module = importlib.import_module("spandrel.__helpers.registry")
        # 2. Each architecture of spandrel's own list; those whose import fails are named with the reason.
        supports = []
        for module_name, class_name, before in registry_entries(root / "__helpers" / "main_registry.py"):
            try:
                module = importlib.import_module(f"spandrel.architectures.{module_name}")
                architecture = getattr(module, class_name)()
            except Exception as exc:
                _unavailable[module_name] = _reason(exc)
                continue
            supports.append(registry_module.ArchSupport.from_architecture(architecture, before=before))
        registry = registry_module.ArchRegistry()
        registry.add(*supports)
        # 3. spandrel's main_registry module holding that registry; then spandrel's own __init__ runs.
        main_registry = types.ModuleType("spandrel.__helpers.main_registry",
                                         "spandrel's main registry, of the architectures that import here (sdart)")
        main_registry.MAIN_REGISTRY = registry
        sys.modules[main_registry.__name__] = main_registry
    finally:
        del sys.modules["spandrel"]
    module = importlib.import_module("spandrel")
    for name, submodule in list(sys.modules.items()):  # `spandrel.architectures.X` reachable as attributes
        if name.startswith("spandrel.") and name.count(".") == 1:
            setattr(module, name.split(".")[1], submodule)
    log.info("spandrel: %d architectures loaded; not available here: %s", len(registry),
                ", ".join(f"{k} ({v})" for k, v in sorted(_unavailable.items())))
    return module


def registry_entries(main_registry_py: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(module, class, before) of each `ArchSupport.from_architecture(Module.ClassArch(), before=…)` passed to
    `MAIN_REGISTRY.add(…)` in spandrel's main_registry.py, in order (detection order follows it)."""
    tree = ast.parse(main_registry_py.read_text())
    entries: list[tuple[str, str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add"
                and ast.unparse(node.func.value) == "MAIN_REGISTRY"):
            continue
        for argument in node.args:
            entries.append(_entry(argument))
    if not entries:
        raise ImportError(f"{main_registry_py}: no MAIN_REGISTRY.add(...) found; this spandrel version is not one "
                          "sdart knows (pyproject pins the range)")
    return entries


def _entry(argument: ast.expr) -> tuple[str, str, tuple[str, ...]]:
    try:
        assert isinstance(argument, ast.Call)
        architecture = argument.args[0]
        assert isinstance(architecture, ast.Call) and isinstance(architecture.func, ast.Attribute)
        assert isinstance(architecture.func.value, ast.Name)
        keywords: dict[str, Any] = {k.arg: ast.literal_eval(k.value) for k in argument.keywords}
        before = tuple(keywords.get("before", ()))
        return architecture.func.value.id, architecture.func.attr, before
    except (AssertionError, IndexError, ValueError):
        raise ImportError(f"spandrel's registry entry {ast.unparse(argument)!r} has a form sdart does not know") from None


def _forget_partial_imports() -> None:
    """A failed `import spandrel` leaves its loader and registry modules half made: drop those."""
    for name in ("spandrel", "spandrel.__helpers.loader", "spandrel.__helpers.main_registry"):
        sys.modules.pop(name, None)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"needs {exc.name.split('.')[0]}, which is not installed"
    if "torchvision" in text:
        return f"needs torchvision, which does not load: {text}"
    return f"{type(exc).__name__}: {text}"
