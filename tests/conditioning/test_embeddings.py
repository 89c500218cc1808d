"""Textual-inversion embedding files: the layouts A1111 reads (`textual_inversion.create_embedding_from_data`), which
files fit which model, and where their vectors land in the encoder's input.

The trick that makes the numbers checkable: an embedding whose vectors are the token embeddings of a word
("red") must encode exactly like that word.
"""

import hashlib
import logging

import pytest
import torch
from safetensors.torch import save_file

from sdart.conditioning import Embeddings, encode_prompt, read_embedding
from sdart.conditioning.embeddings import SINGLE
from sdart.conditioning.encoder import encoder_widths, text_encoders
from sdart.testing import build_tiny_pipeline


@pytest.fixture(scope="module")
def sd15():
    return build_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def sdxl():
    return build_tiny_pipeline("sdxl")


def word_vectors(tokenizer, encoder, word):
    """The token embeddings of `word` (no BOS/EOS): (tokens, width)."""
    ids = tokenizer(word, add_special_tokens=False, return_tensors="pt").input_ids[0]
    return encoder.get_input_embeddings().weight[ids].detach().clone()


def save_a1111(path, vectors, **extra):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem, **extra}, path)
    return path


def save_diffusers(path, vectors):
    torch.save({"<token>": vectors}, path)
    return path


def sd15_widths(pipe):
    return encoder_widths(text_encoders(pipe))


def test_the_four_layouts_read(tmp_path):
    a1111 = read_embedding(save_a1111(tmp_path / "one.pt", torch.ones(2, 32), step=500, sd_checkpoint="abc123",
                                      sd_checkpoint_name="model"))
    assert (a1111.name, a1111.count, a1111.shape, a1111.step, a1111.sd_checkpoint) == ("one", 2, 32, 500, "abc123")
    diffusers = read_embedding(save_diffusers(tmp_path / "two.bin", torch.ones(32)))  # one vector, 1-D
    assert (diffusers.name, diffusers.count, diffusers.shape, diffusers.step) == ("two", 1, 32, None)
    save_file({"emb_params": torch.ones(3, 32)}, tmp_path / "three.safetensors")  # kohya's trainer
    assert read_embedding(tmp_path / "three.safetensors").count == 3
    save_file({"clip_l": torch.ones(4, 32), "clip_g": torch.ones(4, 64)}, tmp_path / "four.safetensors")
    sdxl = read_embedding(tmp_path / "four.safetensors")
    assert (sdxl.count, sdxl.shape, set(sdxl.vectors)) == (4, 96, {"clip_l", "clip_g"})  # A1111: shape = l + g


def test_what_is_not_an_embedding_is_refused_with_a_reason(tmp_path):
    torch.save({"a": torch.ones(2), "b": torch.ones(2)}, tmp_path / "two_tensors.pt")
    with pytest.raises(ValueError, match="not an embedding.*keys"):
        read_embedding(tmp_path / "two_tensors.pt")
    torch.save({"string_to_param": {"*": torch.ones(2, 4), "+": torch.ones(2, 4)}}, tmp_path / "two_words.pt")
    with pytest.raises(ValueError, match="exactly one"):
        read_embedding(tmp_path / "two_words.pt")
    torch.save({"*": logging.getLogger("x")}, tmp_path / "pickle.pt")  # needs arbitrary classes to unpickle
    with pytest.raises(ValueError, match="cannot be read"):
        read_embedding(tmp_path / "pickle.pt")
    save_file({"clip_l": torch.ones(2, 32), "clip_g": torch.ones(3, 64)}, tmp_path / "uneven.safetensors")
    with pytest.raises(ValueError, match="different numbers of vectors"):
        read_embedding(tmp_path / "uneven.safetensors")


def test_a_folder_sorts_files_by_whether_they_fit(tmp_path, sd15, caplog):
    save_a1111(tmp_path / "fits.pt", torch.ones(2, 32))
    save_diffusers(tmp_path / "too_wide.bin", torch.ones(1, 768))
    (tmp_path / "sub").mkdir()
    save_file({"clip_l": torch.ones(1, 32), "clip_g": torch.ones(1, 64)}, tmp_path / "sub" / "for_sdxl.safetensors")
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    (tmp_path / "notes.txt").write_text("not an embedding file name")
    with caplog.at_level(logging.WARNING, logger="sdart.conditioning.embeddings"):
        found = Embeddings.scan(tmp_path, sd15_widths(sd15))
    assert list(found.loaded) == ["fits"] and sorted(found.skipped) == ["for_sdxl", "too_wide"]
    assert list(found.failed) == [str(tmp_path / "broken.pt")]
    assert "too_wide.bin skipped: its vectors are single 768 wide, the loaded model's text encoders single 32" in caplog.text
    assert "for_sdxl.safetensors skipped" in caplog.text and "broken.pt skipped: cannot be read" in caplog.text
    assert found.api() == {  # A1111's /sdapi/v1/embeddings
        "loaded": {"fits": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32, "vectors": 2}},
        "skipped": {"for_sdxl": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 96,
                                 "vectors": 1},
                    "too_wide": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768,
                                 "vectors": 1}},
    }


def test_a_folder_is_read_once_per_model_width_until_a_file_changes(tmp_path, monkeypatch):
    """A base and its refiner ask for different widths, job after job: each set is read once, not every time."""
    from sdart.conditioning import embeddings

    save_a1111(tmp_path / "fits.pt", torch.ones(2, 32))
    reads = []
    monkeypatch.setattr(embeddings, "read_embedding",
                        lambda path, _read=embeddings.read_embedding: reads.append(path.name) or _read(path))
    folder = embeddings.EmbeddingFolder(tmp_path)
    base, refiner = {"clip_l": 32, "clip_g": 64}, {"clip_g": 64}
    for _ in range(3):
        folder.for_model(base), folder.for_model(refiner)
    assert reads == ["fits.pt"] * 2
    save_a1111(tmp_path / "more.pt", torch.ones(1, 64))  # a new file: read again
    folder.for_model(base)
    assert sorted(reads[2:]) == ["fits.pt", "more.pt"]


def test_sdxl_takes_only_sdxl_files(tmp_path, sdxl):
    save_a1111(tmp_path / "sd1.pt", torch.ones(2, 32))
    save_file({"clip_l": torch.ones(1, 32), "clip_g": torch.ones(1, 64)}, tmp_path / "xl.safetensors")
    found = Embeddings.scan(tmp_path, encoder_widths(text_encoders(sdxl)))
    assert list(found.loaded) == ["xl"] and list(found.skipped) == ["sd1"]


def test_a_missing_folder_is_named(tmp_path, sd15):
    with pytest.raises(FileNotFoundError, match="embeddings_dir.*nowhere"):
        Embeddings.scan(tmp_path / "nowhere", sd15_widths(sd15))


@pytest.mark.parametrize("layout", ["a1111", "diffusers"])
def test_an_embedding_of_the_vectors_of_red_encodes_like_red(tmp_path, sd15, layout):
    vectors = word_vectors(sd15.tokenizer, sd15.text_encoder, "red")  # 3 byte tokens: r, e, d</w>
    (save_a1111 if layout == "a1111" else save_diffusers)(tmp_path / "myemb.pt", vectors)
    embeddings = Embeddings.scan(tmp_path, sd15_widths(sd15))
    with_word = encode_prompt(sd15, "a myemb fox", "", steps=4, embeddings=embeddings)
    plain = encode_prompt(sd15, "a red fox", "", steps=4)
    assert torch.equal(with_word.at_step(0)["prompt_embeds"], plain.at_step(0)["prompt_embeds"])
    sha = hashlib.sha256((tmp_path / "myemb.pt").read_bytes()).hexdigest()
    assert with_word.embeddings == {"myemb": sha[:12]}
    assert with_word.infotext_params()["TI hashes"] == f"myemb: {sha[:12]}"
    without = encode_prompt(sd15, "a myemb fox", "", steps=4)  # no embeddings: the word is only letters
    assert not torch.equal(without.at_step(0)["prompt_embeds"], plain.at_step(0)["prompt_embeds"])


def test_an_embedding_in_the_negative_prompt_is_used_too(tmp_path, sd15):
    save_a1111(tmp_path / "myemb.pt", word_vectors(sd15.tokenizer, sd15.text_encoder, "red"))
    embeddings = Embeddings.scan(tmp_path, sd15_widths(sd15))
    with_word = encode_prompt(sd15, "fox", "myemb", steps=4, embeddings=embeddings).at_step(0)
    plain = encode_prompt(sd15, "fox", "red", steps=4).at_step(0)
    assert torch.equal(with_word["negative_prompt_embeds"], plain["negative_prompt_embeds"])


def test_a_multi_vector_embedding_is_never_split_across_chunks(tmp_path, sd15):
    """73 one-token words, then a 3-vector word: 73 + 3 > 75, so chunk one ends after the 73 and the embedding
    opens chunk two, which then encodes like "red" alone."""
    save_a1111(tmp_path / "myemb.pt", word_vectors(sd15.tokenizer, sd15.text_encoder, "red"))
    embeddings = Embeddings.scan(tmp_path, sd15_widths(sd15))
    embeds = encode_prompt(sd15, "a " * 73 + "myemb", steps=4, embeddings=embeddings).at_step(0)["prompt_embeds"]
    assert embeds.shape == (1, 154, 32)
    assert torch.equal(embeds[:, :77], encode_prompt(sd15, "a " * 73, steps=4).at_step(0)["prompt_embeds"])
    assert torch.equal(embeds[:, 77:], encode_prompt(sd15, "red", steps=4).at_step(0)["prompt_embeds"])


def test_sdxl_embedding_gives_each_encoder_its_vectors(tmp_path, sdxl):
    save_file({"clip_l": word_vectors(sdxl.tokenizer, sdxl.text_encoder, "red"),
               "clip_g": word_vectors(sdxl.tokenizer_2, sdxl.text_encoder_2, "red")}, tmp_path / "myemb.safetensors")
    embeddings = Embeddings.scan(tmp_path, encoder_widths(text_encoders(sdxl)))
    with_word = encode_prompt(sdxl, "a myemb fox", "blurry", steps=4, embeddings=embeddings).at_step(0)
    plain = encode_prompt(sdxl, "a red fox", "blurry", steps=4).at_step(0)
    for key in ("prompt_embeds", "pooled_prompt_embeds"):
        assert torch.equal(with_word[key], plain[key]), key


def test_a_skipped_file_leaves_its_word_as_text(tmp_path, sd15):
    save_a1111(tmp_path / "myemb.pt", torch.ones(3, 768))  # SD 1.5-sized, not the tiny model's 32
    embeddings = Embeddings.scan(tmp_path, sd15_widths(sd15))
    assert list(embeddings.skipped) == ["myemb"]
    used = encode_prompt(sd15, "a myemb fox", steps=4, embeddings=embeddings)
    assert used.embeddings == {} and torch.equal(
        used.at_step(0)["prompt_embeds"], encode_prompt(sd15, "a myemb fox", steps=4).at_step(0)["prompt_embeds"])


def test_width_check_per_encoder_key(sd15):
    from sdart.conditioning.embeddings import Embedding, fits

    single = Embedding("x", None, {SINGLE: torch.ones(1, 32)})
    xl = Embedding("x", None, {"clip_l": torch.ones(1, 32), "clip_g": torch.ones(1, 64)})
    assert fits(single, {SINGLE: 32}) and not fits(single, {SINGLE: 48})
    assert fits(xl, {"clip_l": 32, "clip_g": 64}) and not fits(xl, {SINGLE: 32}) and not fits(single, {"clip_l": 32,
                                                                                                       "clip_g": 64})
