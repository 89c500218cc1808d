"""A prompt and negative prompt → the tensors the UNet sees at each step: every distinct prompt of the two
editing schedules encoded once, all padded to the same number of chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sdart.conditioning.chunks import Chunk, EmbeddingWords, empty_chunk, make_chunks
from sdart.conditioning.embeddings import Embeddings
from sdart.conditioning.encoder import DEFAULT_EMPHASIS, EMPHASIS_MODES, TextEncoder, encode_rows, text_encoders
from sdart.conditioning.parser import Fragment, parse_weights, prompt_schedule
from sdart.images.infotext import hashes_value

Schedule = list[tuple[int, str]]  # (last step, prompt text), A1111's prompt schedule


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt text encoded: hidden states (1, 77·chunks, C) and, for SDXL, the pooled output (1, P)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass(frozen=True)
class Conditioning:
    """What a prompt and negative prompt become: their schedules and the encoding of each distinct text.

    Steps are counted as A1111's sampler counts model calls: from 0, and a text holds while the step is at most
    its schedule entry's last step (A1111 `reconstruct_cond_batch`).
    """

    prompt_schedule: Schedule
    negative_schedule: Schedule
    prompts: Mapping[str, EncodedPrompt]
    negatives: Mapping[str, EncodedPrompt]
    steps: int
    emphasis: str = DEFAULT_EMPHASIS
    embeddings: Mapping[str, str] = field(default_factory=dict)  # used embeddings: name → short hash
    weighted: bool = False  # whether either prompt holds brackets (A1111 then names a non-default emphasis)

    @property
    def is_static(self) -> bool:
        """One text each: nothing changes between steps."""
        return len(self.prompt_schedule) == 1 and len(self.negative_schedule) == 1

    @property
    def chunks(self) -> int:
        return next(iter(self.prompts.values())).embeds.shape[1] // 77

    def texts_at(self, step: int) -> tuple[str, str]:
        """The prompt and negative prompt texts used at `step`."""
        return _text_at(self.prompt_schedule, step), _text_at(self.negative_schedule, step)

    def at_step(self, step: int, batch_size: int = 1) -> dict[str, torch.Tensor]:
        """The diffusers pipeline keyword arguments for `step`: `prompt_embeds` and `negative_prompt_embeds`
        (batch_size, 77·chunks, C), and for SDXL `pooled_prompt_embeds`, `negative_pooled_prompt_embeds`."""
        prompt, negative = self.texts_at(step)
        positive, negative_encoded = self.prompts[prompt], self.negatives[negative]
        kwargs = {"prompt_embeds": _batch(positive.embeds, batch_size),
                  "negative_prompt_embeds": _batch(negative_encoded.embeds, batch_size)}
        if positive.pooled is not None:
            kwargs["pooled_prompt_embeds"] = _batch(positive.pooled, batch_size)
            kwargs["negative_pooled_prompt_embeds"] = _batch(negative_encoded.pooled, batch_size)
        return kwargs

    def infotext_params(self) -> dict[str, str | None]:
        """A1111's infotext keys for what conditioning applied: `TI hashes` and (when not the default, and the
        prompts hold brackets) `Emphasis`."""
        emphasis = self.emphasis if self.emphasis != DEFAULT_EMPHASIS and self.weighted else None
        return {"TI hashes": hashes_value(self.embeddings.items()), "Emphasis": emphasis}


def _text_at(schedule: Schedule, step: int) -> str:
    for last_step, text in schedule:
        if step <= last_step:
            return text
    return schedule[-1][1]


def _batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    return tensor if batch_size == 1 else tensor.expand(batch_size, *tensor.shape[1:]).contiguous()


def fragments_for(text: str, emphasis: str) -> list[Fragment]:
    """The weighted fragments of a prompt text under an emphasis mode ("None": the text as typed, one fragment)."""
    if emphasis == "None":
        return [Fragment(text)]
    fragments = parse_weights(text)
    if emphasis == "Ignore":
        for fragment in fragments:
            fragment.weight = 1.0
    return fragments


def _chunk_texts(encoder: TextEncoder, texts: Sequence[str], emphasis: str,
                 embeddings: Embeddings | None) -> list[list[Chunk]]:
    words = EmbeddingWords(encoder.tokenizer, embeddings.loaded.values()) if embeddings and embeddings.loaded else None
    return [make_chunks(fragments_for(text, emphasis), encoder.tokenizer, words) for text in texts]


def encode_prompt(pipe: Any, prompt: str, negative_prompt: str = "", *, steps: int, clip_skip: int = 1,
                  emphasis: str = DEFAULT_EMPHASIS, embeddings: Embeddings | None = None) -> Conditioning:
    """Parse, chunk and encode a prompt and negative prompt for `pipe` (an SD 1.x/2.x or SDXL pipeline).

    `steps` is the length of the editing schedule in A1111's step count (its sampler's model calls: twice the
    steps for the samplers A1111 calls second-order). `embeddings`: the textual-inversion words to recognise.
    """
    # 1. Check inputs.
    if emphasis not in EMPHASIS_MODES:
        raise ValueError(f"emphasis must be one of {', '.join(map(repr, EMPHASIS_MODES))}, got {emphasis!r}")
    encoders = text_encoders(pipe)
    layers = min(int(encoder.model.config.num_hidden_layers) for encoder in encoders)
    if not 1 <= clip_skip <= layers:
        raise ValueError(f"clip_skip must be between 1 and {layers} (the text encoder's layers), got {clip_skip}")
    # 2. The editing schedules and their distinct texts (each encoded once, whatever the number of steps).
    positive = prompt_schedule(prompt, steps)
    negative = prompt_schedule(negative_prompt, steps)
    texts = list(dict.fromkeys([text for _, text in positive] + [text for _, text in negative]))
    # 3. Chunks per encoder, all padded with empty chunks to the longest (positive and negative alike).
    chunked = [_chunk_texts(encoder, texts, emphasis, embeddings) for encoder in encoders]
    count = max(len(chunks) for per_encoder in chunked for chunks in per_encoder)
    for encoder, per_encoder in zip(encoders, chunked):
        for chunks in per_encoder:
            chunks += [empty_chunk(encoder.tokenizer)] * (count - len(chunks))
    # 4. Encode every chunk; per text: (1, 77·count, C) with the encoders side by side on the feature axis.
    device = pipe._execution_device  # where offloading hooks run the encoders
    hidden, pooled = [], None
    for encoder, per_encoder in zip(encoders, chunked):
        rows = [chunk for chunks in per_encoder for chunk in chunks]
        states, pooled_rows = encode_rows(encoder, rows, clip_skip=clip_skip, emphasis=emphasis, device=device)
        hidden.append(states.reshape(len(texts), count * states.shape[1], states.shape[2]))
        if pooled_rows is not None:  # the pooled output of each text's first chunk (A1111, SDXL)
            pooled = pooled_rows.reshape(len(texts), count, -1)[:, 0]
    embeds = torch.cat(hidden, dim=-1)
    encoded = {text: EncodedPrompt(embeds[i:i + 1], None if pooled is None else pooled[i:i + 1])
               for i, text in enumerate(texts)}
    negatives = {text: encoded[text] for _, text in negative}
    if negative_prompt == "" and pooled is not None and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        # SDXL base: an empty negative prompt is zeros, not the encoding of "" (diffusers and A1111 alike)
        negatives = {"": EncodedPrompt(torch.zeros_like(encoded[""].embeds), torch.zeros_like(encoded[""].pooled))}
    used = {}
    for per_encoder in chunked:
        for chunks in per_encoder:
            for chunk in chunks:
                for _, embedding in chunk.placements:
                    used.setdefault(embedding.name, embedding.shorthash)
    return Conditioning(positive, negative, {text: encoded[text] for _, text in positive}, negatives, steps,
                        emphasis, used, weighted=any("(" in text or "[" in text for text in texts))
