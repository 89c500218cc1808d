"""sdart: art from text prompts with Stable Diffusion.

    from sdart import Engine
    result = Engine("CompVis/stable-diffusion-v1-4").generate(prompt="a fox in the snow", seed=42)

Heavy modules (torch, diffusers) are imported on first use, so `import sdart` and the CLI's `--help` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdart.version import __version__

if TYPE_CHECKING:
    from sdart.engine import Engine, GenerationResult, StepProgress
    from sdart.request import GenerationRequest, RequestError

_LAZY = {
    "Engine": "sdart.engine",
    "GenerationResult": "sdart.engine",
    "StepProgress": "sdart.engine",
    "GenerationRequest": "sdart.request",
    "RequestError": "sdart.request",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdart' has no attribute {name!r}")
