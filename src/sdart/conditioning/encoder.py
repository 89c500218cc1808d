"""Chunks → text-encoder hidden states, each chunk encoded on its own and weighted as A1111's emphasis does
(`sd_hijack_clip.process_tokens`, `sd_emphasis`): the weights multiply each token's hidden state and, with
"Original", the chunk's mean is put back to its mean before weighting."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_args

import torch

from sdart.conditioning.chunks import Chunk
from sdart.conditioning.embeddings import SDXL_KEYS, SINGLE
from sdart.request import Emphasis

EMPHASIS_MODES: tuple[str, ...] = get_args(Emphasis)
DEFAULT_EMPHASIS = "Original"


@dataclass(frozen=True)
class TextEncoder:
    """One of the pipeline's text encoders with its tokenizer, and how the UNet reads it."""

    tokenizer: Any
    model: Any
    key: str  # which vectors of an embedding file it takes: SINGLE, "clip_l" or "clip_g"
    penultimate: bool  # SDXL: the hidden state before the last layer, without the final layer norm
    pooled: bool  # SDXL's second encoder: its projected pooled output conditions the UNet too

    @property
    def width(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad


def text_encoders(pipe: Any) -> list[TextEncoder]:
    """The text encoders of an SD 1.x/2.x pipeline (one) or an SDXL pipeline (two, read as diffusers' SDXL
    pipeline reads them); ValueError for a pipeline without one."""
    second = getattr(pipe, "text_encoder_2", None)
    first = getattr(pipe, "text_encoder", None)
    if second is None:
        if first is None:
            raise ValueError(f"{type(pipe).__name__} has no text encoder to encode a prompt with")
        return [TextEncoder(pipe.tokenizer, first, SINGLE, penultimate=False, pooled=False)]
    encoders = [TextEncoder(pipe.tokenizer, first, SDXL_KEYS[0], penultimate=True, pooled=False)] if first else []
    return encoders + [TextEncoder(pipe.tokenizer_2, second, SDXL_KEYS[1], penultimate=True, pooled=True)]


def encoder_widths(encoders: Sequence[TextEncoder]) -> dict[str, int]:
    """What an embedding file must hold to fit: vector width per encoder key."""
    return {encoder.key: encoder.width for encoder in encoders}


@contextmanager
def _embedding_vectors(encoder: TextEncoder, rows: Sequence[Chunk]) -> Iterator[None]:
    """While encoding `rows`, put each placed embedding's vectors where its placeholder tokens are, right after
    the token-embedding lookup (before position embeddings are added), as A1111's EmbeddingsWithFixes does."""
    if not any(row.placements for row in rows):
        yield
        return

    def replace(module, inputs, output):  # output: (rows, 77, width)
        output = output.clone()
        for index, row in enumerate(rows):
            for position, embedding in row.placements:
                vectors = embedding.vectors[encoder.key]
                output[index, position:position + vectors.shape[0]] = vectors.to(output.device, output.dtype)
        return output

    handle = encoder.model.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def _hidden_states(encoder: TextEncoder, output: Any, clip_skip: int) -> torch.Tensor:
    """The layer the UNet reads. clip_skip counts as A1111 does (1 = the last layer): SD 1.x/2.x take layer
    -clip_skip and, when it is not the last, the final layer norm (A1111 `encode_with_transformers`, diffusers
    `encode_prompt`); SDXL takes layer -(clip_skip + 1) and no norm (diffusers' SDXL `encode_prompt`)."""
    if encoder.penultimate:
        return output.hidden_states[-(clip_skip + 1)]
    if clip_skip <= 1:
        return output.last_hidden_state
    model = getattr(encoder.model, "text_model", encoder.model)  # transformers 5 flattened CLIPTextModel
    return model.final_layer_norm(output.hidden_states[-clip_skip])


def apply_emphasis(hidden: torch.Tensor, weights: torch.Tensor, emphasis: str) -> torch.Tensor:
    """hidden (rows, 77, C) × weights (rows, 77); "Original" then rescales each row to its mean before weighting
    (A1111 `EmphasisOriginal.after_transformers`, per chunk)."""
    if emphasis in ("Ignore", "None"):
        return hidden
    weighted = hidden.float() * weights[..., None]
    if emphasis == "Original":
        before = hidden.float().mean(dim=(1, 2), keepdim=True)
        after = weighted.mean(dim=(1, 2), keepdim=True)
        # a zero mean can't be rescaled (A1111 would divide by zero); such a chunk keeps its weighted states
        weighted = weighted * torch.where(after == 0, 1.0, before / torch.where(after == 0, 1.0, after))
    return weighted.to(hidden.dtype)


@torch.no_grad()
def encode_rows(encoder: TextEncoder, rows: Sequence[Chunk], *, clip_skip: int, emphasis: str,
                device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each chunk encoded on its own: hidden states (rows, 77, C) and, for a pooled encoder, the pooled output
    (rows, P) of each chunk. One forward call per distinct chunk (padding chunks and the parts an edit leaves alone
    repeat): batched calls round differently with the batch size (~1e-7 on CPU), and a prompt's tensors should not
    depend on what else the job encodes."""
    encoded: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
    eos_id = encoder.tokenizer.eos_token_id
    for row in rows:
        if row.key() in encoded:
            continue
        ids = torch.tensor([row.input_ids(eos_id, encoder.pad_id)], device=device)  # (1, 77)
        with _embedding_vectors(encoder, [row]):
            output = encoder.model(ids, output_hidden_states=True)
        hidden = _hidden_states(encoder, output, clip_skip)
        weights = torch.tensor([row.weights], device=hidden.device, dtype=torch.float32)
        encoded[row.key()] = apply_emphasis(hidden, weights, emphasis), output.text_embeds if encoder.pooled else None
    parts = [encoded[row.key()] for row in rows]
    return torch.cat([hidden for hidden, _ in parts]), (torch.cat([p for _, p in parts]) if encoder.pooled else None)
