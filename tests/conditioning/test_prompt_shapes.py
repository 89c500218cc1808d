"""The conditioning step on the bundled shapes model (`builtin:shapes`), whose tokenizer makes every caption word
one token (training/shapes_model.py) and spells other words in pieces (byte tokens and the merges of the caption
words' letters)."""

import pytest
import torch

from sdart.conditioning import Embeddings, encode_prompt
from sdart.conditioning.encoder import encoder_widths, text_encoders

RED = "a red circle on a white background"


@pytest.fixture(scope="module")
def shapes_pipe():
    from sdart.models.load import load
    from sdart.models.resolve import resolve

    return load(resolve("builtin:shapes"), torch.float32).pipeline


def test_the_tokenizer_spells_caption_words_as_one_token(shapes_pipe):
    tokenizer = shapes_pipe.tokenizer
    assert tokenizer.convert_ids_to_tokens(tokenizer("red crimson", add_special_tokens=False).input_ids) == [
        "red</w>", "c", "ri", "m", "s", "on</w>"]


def test_an_embedding_of_red_conditions_like_red(shapes_pipe, tmp_path):
    red = shapes_pipe.tokenizer("red", add_special_tokens=False).input_ids
    vectors = shapes_pipe.text_encoder.get_input_embeddings().weight[red].detach().clone()  # (1, 64)
    torch.save({"string_to_param": {"*": vectors}}, tmp_path / "crimson.pt")
    embeddings = Embeddings.scan(tmp_path, encoder_widths(text_encoders(shapes_pipe)))
    new_word = encode_prompt(shapes_pipe, RED.replace("red", "crimson"), steps=10, embeddings=embeddings).at_step(0)
    plain = encode_prompt(shapes_pipe, RED, steps=10).at_step(0)
    assert torch.equal(new_word["prompt_embeds"], plain["prompt_embeds"])
    assert torch.equal(new_word["negative_prompt_embeds"], plain["negative_prompt_embeds"])
