"""Weighted fragments → chunks of 75 tokens, each wrapped as BOS + 75 + EOS = 77, the way A1111's
`sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` packs a prompt."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdart.conditioning.embeddings import Embedding
from sdart.conditioning.parser import Fragment

CHUNK_TOKENS = 75  # prompt tokens per chunk; with BOS and EOS the text encoder's 77 positions
COMMA_BACKTRACK = 20  # A1111's `comma_padding_backtrack` default
PLACEHOLDER_ID = 0  # the token id under an embedding's vectors (replaced before the encoder's first layer)


@dataclass
class Chunk:
    """77 token ids with their weights, and where embedding vectors replace the token embeddings."""

    ids: list[int]
    weights: list[float]
    # (position among the 77, embedding): its vectors fill positions position … position + count - 1
    placements: list[tuple[int, Embedding]] = field(default_factory=list)

    def key(self) -> tuple:
        """Equal for chunks that encode to the same tensors."""
        return tuple(self.ids), tuple(self.weights), tuple((position, id(e)) for position, e in self.placements)

    def input_ids(self, eos_id: int, pad_id: int) -> list[int]:
        """The ids the encoder reads: tokenizers that pad with something other than EOS (OpenCLIP's "!") put
        their pad token after the first EOS, as their own padding does."""
        if pad_id == eos_id:
            return list(self.ids)
        first_eos = self.ids.index(eos_id)
        return self.ids[:first_eos + 1] + [pad_id] * (len(self.ids) - first_eos - 1)


class EmbeddingWords:
    """Finds embedding words in token sequences: a word is the token ids of its name under this tokenizer,
    longest names tried first (A1111 `EmbeddingDatabase.find_embedding_at_position`)."""

    def __init__(self, tokenizer: Any, embeddings: Iterable[Embedding]):
        self._by_first_id: dict[int, list[tuple[list[int], Embedding]]] = {}
        for embedding in embeddings:
            ids = tokenizer(embedding.name, add_special_tokens=False)["input_ids"]
            if ids:
                self._by_first_id.setdefault(ids[0], []).append((ids, embedding))
        for candidates in self._by_first_id.values():
            candidates.sort(key=lambda entry: len(entry[0]), reverse=True)

    def at(self, tokens: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """The embedding whose word starts at `position`, and how many tokens the word takes."""
        for ids, embedding in self._by_first_id.get(tokens[position], ()):
            if list(tokens[position:position + len(ids)]) == ids:
                return embedding, len(ids)
        return None


class _Packer:
    """The chunk being filled, and the finished ones."""

    def __init__(self, bos_id: int, eos_id: int):
        self.bos_id, self.eos_id = bos_id, eos_id
        self.chunks: list[Chunk] = []
        self.ids: list[int] = []
        self.weights: list[float] = []
        self.placements: list[tuple[int, Embedding]] = []  # positions among the 75
        self.last_comma = -1

    def close(self) -> None:
        """Pad the chunk to 75 with EOS, wrap it in BOS … EOS, start an empty one."""
        padding = CHUNK_TOKENS - len(self.ids)
        self.chunks.append(Chunk([self.bos_id, *self.ids, *[self.eos_id] * padding, self.eos_id],
                                 [1.0, *self.weights, *[1.0] * padding, 1.0],
                                 [(position + 1, embedding) for position, embedding in self.placements]))
        self.ids, self.weights, self.placements, self.last_comma = [], [], [], -1

    def close_at_last_comma(self) -> None:
        """Close the chunk just after its last comma; the tokens after it start the next chunk."""
        cut = self.last_comma + 1
        moved = self.ids[cut:], self.weights[cut:], [(p - cut, e) for p, e in self.placements if p >= cut]
        self.ids, self.weights = self.ids[:cut], self.weights[:cut]
        self.placements = [(p, e) for p, e in self.placements if p < cut]
        self.close()
        self.ids, self.weights, self.placements = list(moved[0]), list(moved[1]), moved[2]


def make_chunks(fragments: Sequence[Fragment], tokenizer: Any, words: EmbeddingWords | None = None, *,
                comma_backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """Tokenize each fragment on its own (no BOS/EOS) and pack the tokens into chunks.

    When a token arrives at a full chunk and the chunk's last comma is within `comma_backtrack` tokens of its end,
    the tokens after the comma move on to the next chunk (A1111 `comma_padding_backtrack`); BREAK closes the chunk
    (an empty one too); an embedding's vectors never straddle two chunks. One difference from A1111: embeddings
    moved by the comma rule keep their vectors (A1111 leaves them behind at the old positions).
    """
    packer = _Packer(tokenizer.bos_token_id, tokenizer.eos_token_id)
    comma_id = tokenizer.get_vocab().get(",</w>")
    texts = [fragment.text for fragment in fragments if not fragment.is_break]
    tokenized = iter(tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] if texts else [])
    for fragment in fragments:
        if fragment.is_break:
            packer.close()
            continue
        tokens = next(tokenized)
        position = 0
        while position < len(tokens):
            token = tokens[position]
            full = len(packer.ids) == CHUNK_TOKENS
            if token == comma_id:
                packer.last_comma = len(packer.ids)
            elif (comma_backtrack and full and packer.last_comma != -1
                  and CHUNK_TOKENS - packer.last_comma <= comma_backtrack):
                packer.close_at_last_comma()
            if len(packer.ids) == CHUNK_TOKENS:
                packer.close()
            found = words.at(tokens, position) if words is not None else None
            if found is None:
                packer.ids.append(token)
                packer.weights.append(fragment.weight)
                position += 1
                continue
            embedding, word_length = found
            if len(packer.ids) + embedding.count > CHUNK_TOKENS:
                packer.close()
            packer.placements.append((len(packer.ids), embedding))
            packer.ids += [PLACEHOLDER_ID] * embedding.count
            packer.weights += [fragment.weight] * embedding.count
            position += word_length
    if packer.ids or not packer.chunks:
        packer.close()
    return packer.chunks


def empty_chunk(tokenizer: Any) -> Chunk:
    """The chunk of an empty prompt: what shorter prompts are padded with."""
    return Chunk([tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (CHUNK_TOKENS + 1), [1.0] * (CHUNK_TOKENS + 2))
