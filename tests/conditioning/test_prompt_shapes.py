"""The conditioning step on the bundled shapes model (`builtin:shapes`), whose tokenizer makes every caption word
one token (training/shapes_model.py) and spells other words in pieces (byte tokens and the merges of the caption
words' letters)."""

import numpy as np
import pytest
import torch
from training.shapes_data import analyze_image

from sdart.conditioning import Embeddings, encode_prompt
from sdart.conditioning.encoder import encoder_widths, text_encoders

RED = "a red circle on a white background"
BLUE = "a blue circle on a white background"
STEPS = 10


@pytest.fixture(scope="module")
def shapes_engine():
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine("builtin:shapes", settings=Settings(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def shapes_pipe(shapes_engine):
    return shapes_engine.model.pipeline


def draw(engine, prompt, batch_size=4, **fields):
    """(colours the checker reads, pixels (B, 64, 64, 3)) of seeds 0 … batch_size - 1."""
    result = engine.generate(prompt=prompt, seed=0, batch_size=batch_size, steps=STEPS, progress=False, **fields)
    return ([analyze_image(image)["color"] for image in result.images],
            np.stack([np.asarray(image, dtype=np.float32) for image in result.images]))


def foreground(pixels):
    """Where the shape is: pixels far from the white background (the checker's own threshold, 60)."""
    return np.sqrt(((pixels - 255) ** 2).sum(-1)) > 60


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


def test_a_colour_word_past_token_75_still_decides_the_colour(shapes_engine):
    """80 filler tokens, then the caption: truncated at 77 the colour would be gone; in chunks it is in chunk two."""
    filler = "a " * 80
    red, blue = filler + RED.removeprefix("a "), filler + BLUE.removeprefix("a ")
    assert shapes_engine.encode_prompt(red).chunks == 2
    assert draw(shapes_engine, red, batch_size=2)[0] == ["red", "red"]
    assert draw(shapes_engine, blue, batch_size=2)[0] == ["blue", "blue"]


def test_prompt_editing_keeps_the_first_prompts_layout_and_takes_the_seconds_colour(shapes_engine):
    """[red:blue:0.5]: the first half of the steps (where the layout is decided) follows "red", the rest "blue", so
    the picture is unlike both plain prompts: red's shape, blue's colour."""
    _, red = draw(shapes_engine, RED)
    _, blue = draw(shapes_engine, BLUE)
    colours, edited = draw(shapes_engine, "a [red:blue:0.5] circle on a white background")
    assert colours == ["blue"] * 4
    for i in range(4):
        overlap = lambda a, b: (foreground(a) & foreground(b)).sum() / (foreground(a) | foreground(b)).sum()
        assert overlap(edited[i], red[i]) > 0.6 and overlap(edited[i], red[i]) > overlap(edited[i], blue[i]) + 0.3
        between = np.abs(red[i] - blue[i]).mean()
        assert np.abs(edited[i] - red[i]).mean() > 0.5 * between and np.abs(edited[i] - blue[i]).mean() > 0.5 * between


def test_weight_on_the_colour_word_moves_adherence(shapes_engine):
    """Two colour words, one weighted: more weight on red, more red circles over the same four seeds."""
    def reds(prompt):
        return draw(shapes_engine, prompt)[0].count("red")

    strong, plain, weak = (reds(f"a {words} circle on a white background")
                           for words in ("(red:1.5) blue", "red blue", "(red:0.5) blue"))
    assert strong >= plain >= weak and strong - weak >= 3, (strong, plain, weak)


def test_an_embedding_of_red_draws_red(shapes_pipe, tmp_path):
    from sdart.engine import Engine
    from sdart.settings import Settings

    red = shapes_pipe.tokenizer("red", add_special_tokens=False).input_ids
    (tmp_path / "emb").mkdir()
    torch.save({"string_to_param": {"*": shapes_pipe.text_encoder.get_input_embeddings().weight[red].detach().clone()}},
               tmp_path / "emb" / "crimson.pt")
    engine = Engine("builtin:shapes", settings=Settings(device="cpu", dtype="float32", embeddings_dir=tmp_path / "emb"))
    colours, pixels = draw(engine, RED.replace("red", "crimson"), batch_size=2)
    assert colours == ["red", "red"]
    assert np.array_equal(pixels, draw(engine, RED, batch_size=2)[1])
