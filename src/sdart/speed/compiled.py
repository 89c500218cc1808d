"""Compiled artifacts at run time: each compiled component's forward dispatches, per input shape, to the loaded
artifact of that shape, or runs eager when none exists (other sizes, long prompts, no CFG).

The dispatcher replaces the instance's `forward` (the pipeline still holds the diffusers model, so configs,
`from_pipe` twins and dtype checks see what they always saw). Shapes are looked up in the store on first sight;
a miss is remembered until `refresh()`, which the background builder calls when it has built something: the next
call then switches from eager to compiled, and says so in the log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from sdart.speed.artifacts import ArtifactKey, ArtifactStore
from sdart.speed.compile import Target, load

log = logging.getLogger(__name__)


@dataclass
class ComponentState:
    """What one component runs: which shapes are compiled, which are being built, which failed."""

    compiled: list[str] = field(default_factory=list)
    building: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    eager_calls: int = 0
    compiled_calls: int = 0


class Dispatcher:
    """The forward of one component: compiled where an artifact of the call's shapes exists, eager elsewhere."""

    def __init__(self, target: Target, store: ArtifactStore, eager):
        self.target = target
        self.store = store
        self.eager = eager  # the model's own bound forward
        self.state = ComponentState()
        self._runners: dict[tuple, Any] = {}  # input shapes → loaded package, or None (looked up, absent)
        self._lock = threading.Lock()
        self._cuda_graphs: dict[tuple, Any] = {}

    def refresh(self) -> None:
        """Forget the misses: artifacts built since then are picked up at the next call."""
        with self._lock:
            self._runners = {k: v for k, v in self._runners.items() if v is not None}

    def runner(self, shapes: tuple[tuple[int, ...], ...]):
        with self._lock:
            if shapes in self._runners:
                return self._runners[shapes]
            key = self.target.key(shapes)
            runner = self._load(key)
            self._runners[shapes] = runner
            return runner

    def _load(self, key: ArtifactKey):
        artifact = self.store.find(key)
        if artifact is None:
            return None
        try:
            runner = load(self.target, artifact.package)
        except Exception as exc:  # noqa: BLE001 - a package this torch can't load is rebuilt, never half-used
            log.warning("compiled %s could not be loaded (%s: %s); it will be rebuilt", key.describe(),
                        type(exc).__name__, exc)
            self.store.discard(key)
            self.state.failed[key.describe()] = f"load: {exc}"
            return None
        text = key.describe()
        if self.state.eager_calls:
            log.info("compiled %s ready: switching from eager", key.describe())
        else:
            log.info("compiled %s loaded from %s", key.describe(), artifact.folder)
        if text not in self.state.compiled:
            self.state.compiled.append(text)
        return runner

    def __call__(self, *args, **kwargs):
        tensors = self.inputs(*args, **kwargs)
        runner = self.runner(tuple(tuple(t.shape) for t in tensors)) if tensors is not None else None
        if runner is None:
            self.state.eager_calls += 1
            return self.eager(*args, **kwargs)
        self.state.compiled_calls += 1
        out = self._run(runner, tensors)
        if self.target.component == "unet":
            if kwargs.get("return_dict", True):
                from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

                return UNet2DConditionOutput(sample=out)
            return (out,)
        return out

    def _run(self, runner, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.target.device.type != "cuda":
            return runner(*tensors)
        from sdart.speed.cudagraphs import replay

        return replay(self._cuda_graphs, runner, tensors)  # which gives the runner a weight swapped since capture

    def inputs(self, *args, **kwargs) -> tuple[torch.Tensor, ...] | None:
        """The call as the artifact's tensors (dtype, layout and timestep form of the export), or None: eager."""
        dtype, device = self.target.dtype, self.target.device
        if self.target.component != "unet":  # decoder(z, latent_embeds=None)
            z = args[0] if args else kwargs.get("sample")
            if len(args) > 1 or kwargs.get("latent_embeds") is not None or not _is(z, dtype, device):
                return None
            return (z.contiguous(),)
        sample = args[0] if args else kwargs.get("sample")
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        context = args[2] if len(args) > 2 else kwargs.get("encoder_hidden_states")
        unsupported = ("class_labels", "timestep_cond", "attention_mask", "cross_attention_kwargs",
                       "down_block_additional_residuals", "mid_block_additional_residual",
                       "down_intrablock_additional_residuals", "encoder_attention_mask")
        if len(args) > 3 or any(kwargs.get(name) is not None for name in unsupported):
            return None
        if not (_is(sample, dtype, device) and _is(context, dtype, device)):
            return None
        timestep = torch.as_tensor(timestep, device=device)
        if timestep.numel() != 1:
            return None
        tensors = [sample.contiguous(), timestep.reshape(()).to(torch.float32), context.contiguous()]
        added = kwargs.get("added_cond_kwargs")
        if added:  # SDXL
            embeds, time_ids = added.get("text_embeds"), added.get("time_ids")
            if set(added) != {"text_embeds", "time_ids"} or not _is(embeds, dtype, device) or time_ids is None:
                return None
            tensors += [embeds.contiguous(), time_ids.to(device, torch.float32).contiguous()]
        return tuple(tensors)


def _is(tensor, dtype: torch.dtype, device: torch.device) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.dtype == dtype and tensor.device.type == device.type


class CompiledComponents:
    """The dispatchers attached to one loaded pipeline, and their state for logs and /api/v1/health."""

    def __init__(self, mode: str, targets: list[Target], store: ArtifactStore, reason: str | None = None):
        self.mode = mode
        self.targets = targets
        self.store = store
        self.reason = reason  # why nothing is compiled (mode never, step cache, memory mode…)
        self.dispatchers: dict[str, Dispatcher] = {}
        for target in targets:
            dispatcher = Dispatcher(target, store, target.module.forward)
            target.module.forward = dispatcher  # nn.Module.__call__ looks up the instance attribute first
            self.dispatchers[target.component] = dispatcher

    def refresh(self) -> None:
        for dispatcher in self.dispatchers.values():
            dispatcher.refresh()

    def status(self) -> dict[str, Any]:
        components = {}
        for name, dispatcher in self.dispatchers.items():
            s = dispatcher.state
            components[name] = {"compiled": list(s.compiled), "building": list(s.building), "failed": dict(s.failed),
                                "compiled_calls": s.compiled_calls, "eager_calls": s.eager_calls}
        state = "off" if not self.dispatchers else (
            "building" if any(d.state.building for d in self.dispatchers.values()) else
            "compiled" if any(d.state.compiled for d in self.dispatchers.values()) else "eager")
        out: dict[str, Any] = {"mode": self.mode, "state": state, "components": components}
        if self.reason:
            out["reason"] = self.reason
        return out


def attach_compiled(pipe, family: str, dtype: torch.dtype, device: torch.device, options, settings,
                    memory: str) -> CompiledComponents:
    """Dispatchers on the UNet and VAE decoder of a loaded pipeline, or none, with the reason."""
    from sdart.speed.compile import targets

    store = ArtifactStore(settings.cache_dir)
    mode = settings.compile
    reason = None
    if mode == "never":
        reason = "compile = never"
    elif options.step_cache:
        reason = "the step cache switches the UNet's graph each step"
    elif device.type == "cuda" and memory != "balanced":
        reason = f"memory = {memory}: offloading moves the weights the compiled code reads"
    elif device.type not in ("cpu", "cuda"):
        reason = f"no compiled artifacts on {device.type}"
    if reason is not None:
        if mode == "always":
            log.warning("compile = always not applied: %s; running eager", reason)
        return CompiledComponents(mode, [], store, reason)
    return CompiledComponents(mode, targets(pipe, family, dtype, device, options), store)
