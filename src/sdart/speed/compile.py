"""Ahead-of-time compiled UNet and VAE decoder: torch.export + AOTInductor packages, weights handed over at load.

Why this form (benchmarks/compile_start.py, NOTES.md "Compiled artifacts"): an AOTInductor package is a shared
library that loads in a fraction of a second in a fresh process, where torch.compile must trace the model with
dynamo again at every start even when Inductor's caches hold the compiled code. The package leaves the weights
out (`package_constants_in_so=False`): at load it is given the loaded model's own tensors
(`load_constants(..., user_managed=True)`, no copy), so the process holds one set of weights, eager fallback
included, and one artifact serves every fine-tune and LoRA of an architecture.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdart.speed.artifacts import ArtifactKey, config_digest, device_kind

log = logging.getLogger(__name__)

TEXT_TOKENS = 77  # one CLIP chunk (75 tokens + BOS/EOS); longer prompts run eager


class UNetCall(torch.nn.Module):
    """The UNet as the pipelines call it, with tensors only: (sample, timestep, context[, text_embeds, time_ids])."""

    def __init__(self, unet):
        super().__init__()
        self.model = unet

    def forward(self, sample, timestep, context, text_embeds=None, time_ids=None):
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        # The class's forward, not the instance's: the instance's is the dispatcher once artifacts are attached.
        return type(self.model).forward(self.model, sample, timestep, encoder_hidden_states=context,
                                        added_cond_kwargs=added, return_dict=False)[0]


class DecoderCall(torch.nn.Module):
    """The VAE decoder (after post_quant_conv): latents (B, 4, h, w) → pixels (B, 3, 8h, 8w)."""

    def __init__(self, decoder):
        super().__init__()
        self.model = decoder

    def forward(self, z):
        return type(self.model).forward(self.model, z)


@dataclass(frozen=True)
class Target:
    """One component of one loaded pipeline to compile, with what its key needs."""

    component: str
    module: torch.nn.Module  # the model whose forward the artifact replaces (UNet, or vae.decoder)
    config: Any  # the model's diffusers config (its digest is the architecture)
    family: str
    dtype: torch.dtype
    device: torch.device
    options: tuple[tuple[str, Any], ...]

    def call_module(self) -> torch.nn.Module:
        return UNetCall(self.module) if self.component == "unet" else DecoderCall(self.module)

    def key(self, inputs: tuple[tuple[int, ...], ...]) -> ArtifactKey:
        return ArtifactKey(component=self.component, family=self.family, architecture=config_digest(self.config),
                           dtype=str(self.dtype).removeprefix("torch."), device=device_kind(self.device),
                           inputs=inputs, options=self.options)


def targets(pipe, family: str, dtype: torch.dtype, device: torch.device, options) -> list[Target]:
    """The components of `pipe` that compile: the UNet and the VAE decoder (AutoencoderKL; TAESD is already fast)."""
    from diffusers import AutoencoderKL

    graph_options = tuple(sorted(graph_changing_options(options).items()))
    found = [Target("unet", pipe.unet, pipe.unet.config, family, dtype, device, graph_options)]
    if isinstance(pipe.vae, AutoencoderKL):
        found.append(Target("vae-decoder", pipe.vae.decoder, pipe.vae.config, family, dtype, device, graph_options))
    return found


def graph_changing_options(options) -> dict[str, Any]:
    """The speed options that change the compiled graph (and so the artifact)."""
    return {"channels_last": options.channels_last, "fuse_qkv": options.fuse_qkv,
            "token_downsampling": options.token_downsampling, "quantize": options.quantize}


def unet_inputs(unet, batch: int, width: int, height: int, *, cfg: bool = True) -> tuple[tuple[int, ...], ...]:
    """Input shapes of one UNet call: (sample, timestep, context[, text_embeds, time_ids]); CFG doubles the batch."""
    n = batch * (2 if cfg else 1)
    config = unet.config
    shapes = [(n, config.in_channels, height // 8, width // 8), (), (n, TEXT_TOKENS, config.cross_attention_dim)]
    if config.addition_embed_type == "text_time":  # SDXL: pooled text embeds and the size/crop conditioning
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        shapes += [(n, pooled), (n, 6)]
    return tuple(shapes)


def decoder_inputs(vae, batch: int, width: int, height: int) -> tuple[tuple[int, ...], ...]:
    return ((batch, vae.config.latent_channels, height // 8, width // 8),)


def example_inputs(target: Target, inputs: tuple[tuple[int, ...], ...]) -> tuple[torch.Tensor, ...]:
    """Random tensors of the call's shapes, dtypes and layout (contiguous; the timestep a float32 scalar)."""
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for position, shape in enumerate(inputs):
        if target.component == "unet" and position == 1:
            tensors.append(torch.tensor(500.0, device=target.device))
            continue
        dtype = torch.float32 if target.component == "unet" and position == 4 else target.dtype  # time_ids
        tensors.append(torch.randn(shape, generator=generator).to(target.device, dtype))
    return tuple(tensors)


def build(target: Target, inputs: tuple[tuple[int, ...], ...], package: Path) -> float:
    """Export the component at these input shapes and compile it into an AOTInductor package; seconds taken."""
    started = time.perf_counter()
    module = target.call_module().eval()
    args = example_inputs(target, inputs)
    with torch.no_grad():
        program = torch.export.export(module, args, strict=False)
        log.info("exported %s in %.0f s", target.component, time.perf_counter() - started)
        torch._inductor.aoti_compile_and_package(program, package_path=str(package), inductor_configs={
            # Weights stay out of the package: load() hands it the model's own tensors.
            "aot_inductor.package_constants_in_so": False,
            "conv_1x1_as_mm": True,  # the attention blocks' proj_in/out: plain matmuls
        })
    return time.perf_counter() - started


class PackageRunner:
    """A loaded package called with its flat input tensors. The C++ loader directly: torch's Python wrapper
    (aoti_load_package) imports torch._inductor, 15-20 s on 2 busy cores, for a pytree flatten sdart doesn't need.

    The package reads the model's weights where they were when it was given them. A weight replaced since (a
    request's LoRA tags swap patched copies in for the run and the originals back, sdart.models.loraswitch) is
    given to it again before the call: a check of identity and address per weight, well under a millisecond."""

    def __init__(self, loader, bindings: list[tuple[str, torch.nn.Module, str]]):
        self.loader = loader
        self.bindings = bindings  # (name in the package, module holding the weight, attribute)
        self.given: dict[str, tuple[torch.Tensor, int]] = {}
        self.give_weights(check_full_update=True)

    def give_weights(self, *, check_full_update: bool = False) -> bool:
        """Give the package the weights replaced since it was last told; whether there were any."""
        changed = {}
        for name, module, attr in self.bindings:
            tensor = getattr(module, attr)
            given = self.given.get(name)
            if given is None or given[0] is not tensor or given[1] != tensor.data_ptr():
                self.given[name] = (tensor, tensor.data_ptr())
                changed[name] = tensor.detach()
        if changed:
            # (constants, use the inactive buffer, check that all are given, user-managed: no copy, copy to device)
            self.loader.load_constants(changed, False, check_full_update, True, False)
        return bool(changed)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        self.give_weights()
        return self.loader.boxed_run(list(tensors))[0]


def load(target: Target, package: Path) -> PackageRunner:
    """Load a package and give it the component's weights (shared with the eager model, not copied)."""
    # Single-threaded runner on CUDA: captured into CUDA graphs (sdart.speed.cudagraphs), which its locks would break.
    loader = torch._C._aoti.AOTIModelPackageLoader(str(package), "model", target.device.type == "cuda", 1, -1)
    call = target.call_module()
    bindings = []
    for name in loader.get_constant_fqns():
        path, _, attr = name.rpartition(".")
        try:
            module = call.get_submodule(path)
            getattr(module, attr)
        except AttributeError:
            raise ValueError(f"the package needs a weight the model lacks: {name}") from None
        bindings.append((name, module, attr))
    return PackageRunner(loader, bindings)
