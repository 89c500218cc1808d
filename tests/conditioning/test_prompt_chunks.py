"""Packing weighted fragments into chunks of 75 tokens (A1111 `sd_hijack_clip.tokenize_line`).

The tokenizer is sdart.testing's byte-level CLIP tokenizer: every character is one token and a word's last
character carries "</w>", so "a" is one token and "," (a word of its own) is the comma token A1111 looks for.
"""

import pytest
import torch

from sdart.conditioning.chunks import CHUNK_TOKENS, EmbeddingWords, empty_chunk, make_chunks
from sdart.conditioning.embeddings import SINGLE, Embedding
from sdart.conditioning.parser import parse_weights


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import CLIPTokenizer

    from sdart.testing import write_byte_level_tokenizer

    return CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(tmp_path_factory.mktemp("tok")))


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def body(chunk, tokenizer):
    """The chunk's prompt tokens: without BOS, EOS and the EOS padding."""
    assert chunk.ids[0] == tokenizer.bos_token_id and chunk.ids[-1] == tokenizer.eos_token_id
    assert len(chunk.ids) == len(chunk.weights) == CHUNK_TOKENS + 2
    inner = chunk.ids[1:-1]
    while inner and inner[-1] == tokenizer.eos_token_id:
        inner = inner[:-1]
    return inner


def chunks_of(text, tokenizer, words=None):
    return make_chunks(parse_weights(text), tokenizer, words)


def test_a_short_prompt_is_one_chunk_padded_with_eos(tokenizer):
    [chunk] = chunks_of("a red fox", tokenizer)
    assert chunk.ids == [tokenizer.bos_token_id, *ids(tokenizer, "a red fox")] + [tokenizer.eos_token_id] * 69
    assert chunk.weights == [1.0] * 77


def test_75_tokens_fit_one_chunk_and_the_76th_starts_another(tokenizer):
    assert len(chunks_of("a " * 75, tokenizer)) == 1
    first, second = chunks_of("a " * 75 + "b", tokenizer)
    assert body(first, tokenizer) == ids(tokenizer, "a") * 75 and body(second, tokenizer) == ids(tokenizer, "b")


def test_empty_prompt_is_one_empty_chunk(tokenizer):
    [chunk] = chunks_of("", tokenizer)
    assert chunk.ids == empty_chunk(tokenizer).ids == [tokenizer.bos_token_id] + [tokenizer.eos_token_id] * 76


def test_weights_follow_their_tokens(tokenizer):
    [chunk] = chunks_of("a (bc:1.5) [d]", tokenizer)
    # "a", then "b" "c</w>" at 1.5, then " " (no token), then "d</w>" at 1/1.1
    assert chunk.weights[:6] == [1.0, 1.0, 1.5, 1.5, 1 / 1.1, 1.0]


def test_comma_within_20_tokens_of_the_end_moves_what_follows_it(tokenizer):
    """60 "a", a comma at index 60, then 20 "b": when the 76th token arrives the last comma is 15 from the end
    (≤ 20), so the 14 "b" after it leave the first chunk; it ends with the comma."""
    first, second = chunks_of("a " * 60 + ", " + "b " * 20, tokenizer)
    assert body(first, tokenizer) == ids(tokenizer, "a") * 60 + ids(tokenizer, ",")
    assert body(second, tokenizer) == ids(tokenizer, "b") * 20


def test_comma_further_back_moves_nothing(tokenizer):
    """Comma at index 50: 25 from the end (> 20), so the chunk is cut at 75 tokens."""
    first, second = chunks_of("a " * 50 + ", " + "b " * 30, tokenizer)
    assert body(first, tokenizer) == ids(tokenizer, "a") * 50 + ids(tokenizer, ",") + ids(tokenizer, "b") * 24
    assert body(second, tokenizer) == ids(tokenizer, "b") * 6


def test_the_comma_rule_can_be_turned_off(tokenizer):
    first, _ = make_chunks(parse_weights("a " * 60 + ", " + "b " * 20), tokenizer, comma_backtrack=0)
    assert len(body(first, tokenizer)) == 75


def test_moved_tokens_keep_their_weights(tokenizer):
    first, second = chunks_of("a " * 60 + ", (" + "b " * 20 + ")", tokenizer)
    assert second.weights[1:21] == [1.1] * 20 and second.weights[21:] == [1.0] * 56


def test_break_closes_the_chunk(tokenizer):
    first, second = chunks_of("a b BREAK c", tokenizer)
    assert body(first, tokenizer) == ids(tokenizer, "a b") and body(second, tokenizer) == ids(tokenizer, "c")


def test_break_first_or_twice_closes_empty_chunks(tokenizer):
    """A1111 closes the chunk at each BREAK, even an empty one."""
    empty, rest = chunks_of("BREAK a", tokenizer)
    assert body(empty, tokenizer) == [] and body(rest, tokenizer) == ids(tokenizer, "a")
    assert [len(body(c, tokenizer)) for c in chunks_of("a BREAK BREAK b", tokenizer)] == [1, 0, 1]


def embedding(name, count, width=32):
    return Embedding(name, None, {SINGLE: torch.randn(count, width)})


def test_an_embedding_word_becomes_its_vectors(tokenizer):
    """"xyz" (3 tokens) → a 2-vector embedding: 2 placeholder positions, weighted like the word."""
    emb = embedding("xyz", 2)
    [chunk] = chunks_of("a (xyz:1.2) b", tokenizer, EmbeddingWords(tokenizer, [emb]))
    assert chunk.placements == [(2, emb)]  # after BOS and "a"
    assert chunk.ids[1:5] == [*ids(tokenizer, "a"), 0, 0, *ids(tokenizer, "b")]
    assert chunk.weights[2:4] == [1.2, 1.2]


def test_an_embedding_is_never_split_across_chunks(tokenizer):
    """73 tokens then a 4-vector embedding: 73 + 4 > 75, so the chunk closes and the embedding starts the next."""
    emb = embedding("xyz", 4)
    first, second = chunks_of("a " * 73 + "xyz", tokenizer, EmbeddingWords(tokenizer, [emb]))
    assert body(first, tokenizer) == ids(tokenizer, "a") * 73 and first.placements == []
    assert second.placements == [(1, emb)] and body(second, tokenizer) == [0] * 4


def test_an_embedding_moved_by_the_comma_rule_keeps_its_vectors(tokenizer):
    emb = embedding("xyz", 2)
    first, second = chunks_of("a " * 60 + ", xyz " + "b " * 20, tokenizer, EmbeddingWords(tokenizer, [emb]))
    assert body(first, tokenizer) == ids(tokenizer, "a") * 60 + ids(tokenizer, ",")
    assert second.placements == [(1, emb)] and body(second, tokenizer) == [0, 0] + ids(tokenizer, "b") * 20


def test_the_longest_matching_name_wins(tokenizer):
    short, long = embedding("xy", 1), embedding("xyz", 1)
    [chunk] = chunks_of("xyz", tokenizer, EmbeddingWords(tokenizer, [short, long]))
    assert chunk.placements == [(1, long)]


def test_a_word_split_by_brackets_is_not_an_embedding(tokenizer):
    """Matching is within one fragment's tokens (A1111): "xy(z)" holds no word "xyz"."""
    [chunk] = chunks_of("xy(z)", tokenizer, EmbeddingWords(tokenizer, [embedding("xyz", 1)]))
    assert chunk.placements == []


def test_openclip_padding_follows_the_first_eos(tokenizer):
    [chunk] = chunks_of("a", tokenizer)
    assert chunk.input_ids(eos_id=513, pad_id=0) == [512, ids(tokenizer, "a")[0], 513] + [0] * 74
