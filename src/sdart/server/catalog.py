"""The models a client may ask for, by name: the one the server was started with, `extra_models`, and the
built-in ones.

Clients name models, never paths: a name is looked up here and only a reference the operator configured
reaches `sdart.models.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdart.engine import Engine
from sdart.models.resolve import builtin_models, resolve
from sdart.request import checkpoint_name


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what clients send (A1111 `sd_model_checkpoint`, native `model`)
    reference: str  # what sdart.models.resolve gets
    loaded: bool
    hash: str | None  # A1111 short hash; known for the loaded model only (hashing others means reading them)




class ModelCatalog:
    def __init__(self, engine: Engine, extra: list[str] | None = None):
        self._engine = engine
        self._configured = [engine.reference, *(extra or [])]
        for reference in self._configured:
            resolve(reference)  # a typo in extra_models fails at start (ModelLoadError), not on first use

    def entries(self) -> list[ModelEntry]:
        references = [*self._configured, *(f"builtin:{name}" for name in builtin_models())]
        if self._engine.reference not in references:
            references.append(self._engine.reference)
        loaded = self._engine.reference
        return [
            ModelEntry(resolve(ref).name, ref, ref == loaded, self._engine.model.hash if ref == loaded else None)
            for ref in dict.fromkeys(references)
        ]

    def find(self, name: str) -> ModelEntry | None:
        """The entry named `name` (its name, reference or A1111 title), or None."""
        wanted = checkpoint_name(name)
        for entry in self.entries():
            if wanted in (entry.name, entry.reference):
                return entry
        return None

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]


def title(entry: ModelEntry) -> str:
    return f"{entry.name} [{entry.hash}]" if entry.hash else entry.name
