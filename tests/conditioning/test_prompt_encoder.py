"""encode_prompt on tiny SD 1.x, SD 2.x and SDXL pipelines, checked number by number.

Semantics from A1111 `sd_hijack_clip.py` (chunks encoded alone, padded with empty chunks) and `sd_emphasis.py`
(Original: z·w rescaled to the mean before weighting; No norm: z·w), and diffusers' `encode_prompt` (what a plain
prompt must equal).
"""

import pytest
import torch

from sdart.conditioning import encode_prompt
from sdart.testing import build_tiny_pipeline


@pytest.fixture(scope="module")
def pipes():
    built = {kind: build_tiny_pipeline(kind) for kind in ("sd15", "sd2v", "sdxl")}
    # Random tiny encoders end in a LayerNorm with weight 1 and bias 0, so every token's mean over the features is
    # ~0 and "restore the mean" would be a ratio of rounding noise; trained encoders' norms are not like that.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for pipe in built.values():
            for encoder in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
                if encoder is not None:
                    norm = getattr(encoder, "text_model", encoder).final_layer_norm
                    norm.weight.data = 1 + torch.randn_like(norm.weight) * 0.3
                    norm.bias.data = 0.5 + torch.randn_like(norm.bias) * 0.5
    return built


@torch.no_grad()
def plain(pipe, text, clip_skip=1):
    """The encoder's hidden states for one chunk of `text` tokenized as diffusers does: (1, 77, C)."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    output = pipe.text_encoder(ids, output_hidden_states=True)
    if clip_skip == 1:
        return output.last_hidden_state
    return pipe.text_encoder.final_layer_norm(output.hidden_states[-clip_skip])


@pytest.mark.parametrize("kind", ["sd15", "sd2v"])
def test_unweighted_prompt_equals_diffusers_encoding(pipes, kind):
    pipe = pipes[kind]
    ours = encode_prompt(pipe, "a red fox, in the snow", "ugly", steps=4).at_step(0)
    theirs, negative = pipe.encode_prompt("a red fox, in the snow", "cpu", 1, True, negative_prompt="ugly")
    assert torch.equal(ours["prompt_embeds"], theirs) and torch.equal(ours["negative_prompt_embeds"], negative)


def test_unweighted_sdxl_prompt_equals_diffusers_encoding(pipes):
    pipe = pipes["sdxl"]
    ours = encode_prompt(pipe, "a red fox, in the snow", "ugly", steps=4).at_step(0)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a red fox, in the snow", negative_prompt="ugly",
                                                                   device="cpu")
    assert torch.equal(ours["prompt_embeds"], embeds) and torch.equal(ours["negative_prompt_embeds"], negative)
    assert torch.equal(ours["pooled_prompt_embeds"], pooled)
    assert torch.equal(ours["negative_pooled_prompt_embeds"], negative_pooled)


def test_sdxl_empty_negative_is_zeros_as_in_diffusers(pipes):
    ours = encode_prompt(pipes["sdxl"], "a red fox", "", steps=4).at_step(0)
    assert not ours["negative_prompt_embeds"].any() and not ours["negative_pooled_prompt_embeds"].any()
    assert ours["negative_prompt_embeds"].shape == ours["prompt_embeds"].shape == (1, 77, 96)


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(pipes):
    pipe = pipes["sd15"]
    ours = encode_prompt(pipe, "a red fox", steps=4, clip_skip=2).at_step(0)["prompt_embeds"]
    assert torch.equal(ours, plain(pipe, "a red fox", clip_skip=2))
    assert not torch.equal(ours, plain(pipe, "a red fox"))


def fox_positions():
    # byte tokenizer: BOS, "a</w>", then "f" "o" "x</w>" at positions 2-4
    return slice(2, 5)


def test_no_norm_multiplies_the_weighted_tokens_only(pipes):
    pipe = pipes["sd15"]
    weighted = encode_prompt(pipe, "a (fox:1.5)", steps=4, emphasis="No norm").at_step(0)["prompt_embeds"]
    unweighted = plain(pipe, "a fox")
    expected = unweighted.clone()
    expected[:, fox_positions()] *= 1.5
    torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=0)


def test_original_emphasis_restores_the_chunk_mean(pipes):
    pipe = pipes["sd15"]
    weighted = encode_prompt(pipe, "a (fox:1.5)", steps=4).at_step(0)["prompt_embeds"]
    unweighted = plain(pipe, "a fox")
    scaled = unweighted.clone()
    scaled[:, fox_positions()] *= 1.5
    torch.testing.assert_close(weighted, scaled * (unweighted.mean() / scaled.mean()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weighted.mean(), unweighted.mean(), rtol=1e-5, atol=0)
    assert (scaled.mean() - unweighted.mean()).abs() > 0.01 * unweighted.mean().abs()  # without it, it would move


def test_ignore_drops_weights_and_none_reads_brackets_as_text(pipes):
    pipe = pipes["sd15"]
    ignored = encode_prompt(pipe, "a (fox:1.5)", steps=4, emphasis="Ignore").at_step(0)["prompt_embeds"]
    assert torch.equal(ignored, plain(pipe, "a fox"))
    literal = encode_prompt(pipe, "a (fox:1.5)", steps=4, emphasis="None").at_step(0)["prompt_embeds"]
    assert torch.equal(literal, plain(pipe, "a (fox:1.5)"))


def test_a_long_prompt_takes_two_chunks_each_encoded_alone(pipes):
    """90 one-token words: chunk one holds 75, chunk two the other 15 (plus "fox"); the short negative is padded
    with the empty prompt's chunk to the same (1, 154, C)."""
    pipe = pipes["sd15"]
    kwargs = encode_prompt(pipe, "a " * 90 + "fox", "ugly", steps=4).at_step(0)
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape == (1, 154, 32)
    assert torch.equal(kwargs["prompt_embeds"][:, :77], plain(pipe, "a " * 75))
    assert torch.equal(kwargs["prompt_embeds"][:, 77:], plain(pipe, "a " * 15 + "fox"))
    assert torch.equal(kwargs["negative_prompt_embeds"][:, :77], plain(pipe, "ugly"))
    assert torch.equal(kwargs["negative_prompt_embeds"][:, 77:], plain(pipe, ""))


def test_a_long_negative_pads_the_prompt(pipes):
    kwargs = encode_prompt(pipes["sd15"], "fox", "a " * 80, steps=4).at_step(0)
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape == (1, 154, 32)
    assert torch.equal(kwargs["prompt_embeds"][:, 77:], plain(pipes["sd15"], ""))


def test_break_adds_a_chunk(pipes):
    pipe = pipes["sd15"]
    embeds = encode_prompt(pipe, "a red fox BREAK in the snow", steps=4).at_step(0)["prompt_embeds"]
    assert embeds.shape == (1, 154, 32)
    assert torch.equal(embeds[:, :77], plain(pipe, "a red fox")) and torch.equal(embeds[:, 77:], plain(pipe, "in the snow"))


def test_sdxl_runs_both_encoders_per_chunk_and_pools_chunk_one(pipes):
    pipe = pipes["sdxl"]
    both = encode_prompt(pipe, "a red fox BREAK in the snow", steps=4).at_step(0)
    first = encode_prompt(pipe, "a red fox", steps=4).at_step(0)
    second = encode_prompt(pipe, "in the snow", steps=4).at_step(0)
    assert both["prompt_embeds"].shape == (1, 154, 96)
    assert torch.equal(both["prompt_embeds"], torch.cat([first["prompt_embeds"], second["prompt_embeds"]], dim=1))
    assert torch.equal(both["pooled_prompt_embeds"], first["pooled_prompt_embeds"])
    assert (both["pooled_prompt_embeds"] - second["pooled_prompt_embeds"]).abs().max() > 1e-3


def test_editing_schedule_switches_at_A1111_steps(pipes):
    """[red:blue:2] at 4 steps: A1111's schedule is [(2, "red"), (4, "blue")] and its sampler (counting model calls
    from 0) uses red while the step is ≤ 2: steps 0, 1, 2 red, step 3 blue."""
    pipe = pipes["sd15"]
    conditioning = encode_prompt(pipe, "a [red:blue:2] fox", steps=4)
    red, blue = plain(pipe, "a red fox"), plain(pipe, "a blue fox")
    assert [torch.equal(conditioning.at_step(s)["prompt_embeds"], red) for s in range(4)] == [True] * 3 + [False]
    assert torch.equal(conditioning.at_step(3)["prompt_embeds"], blue)
    assert not conditioning.is_static


def test_alternation_follows_A1111_step_counting(pipes):
    """[red|blue] at 4 steps: schedule [(1, red), (2, blue), (3, red), (4, blue)]; steps 0-3 take the first entry
    whose last step is ≥ the step: red, red, blue, red."""
    conditioning = encode_prompt(pipes["sd15"], "[red|blue]", steps=4)
    assert [conditioning.texts_at(step)[0] for step in range(4)] == ["red", "red", "blue", "red"]


def test_each_distinct_prompt_is_encoded_once(pipes):
    pipe = pipes["sd15"]
    rows = []
    handle = pipe.text_encoder.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    try:
        conditioning = encode_prompt(pipe, "[red|blue] fox", "[ugly:blurry:0.5]", steps=30)
    finally:
        handle.remove()
    assert sum(rows) == 4  # "red fox", "blue fox", "ugly", "blurry": one chunk each, whatever the 30 steps
    assert len(conditioning.prompts) == len(conditioning.negatives) == 2


def test_equal_chunks_are_encoded_once(pipes):
    """Two chunks of prompt; the empty negative's own chunk and its padding chunk are the same empty chunk."""
    pipe = pipes["sd15"]
    rows = []
    handle = pipe.text_encoder.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    try:
        kwargs = encode_prompt(pipe, "a " * 80, "", steps=4).at_step(0)
    finally:
        handle.remove()
    assert sum(rows) == 3 and kwargs["negative_prompt_embeds"].shape == (1, 154, 32)
    assert torch.equal(kwargs["negative_prompt_embeds"][:, :77], kwargs["negative_prompt_embeds"][:, 77:])


def test_batch_size_repeats_the_tensors(pipes):
    kwargs = encode_prompt(pipes["sdxl"], "fox", "ugly", steps=4).at_step(0, batch_size=3)
    assert kwargs["prompt_embeds"].shape == (3, 77, 96) and kwargs["negative_pooled_prompt_embeds"].shape == (3, 32)


def test_bad_emphasis_and_clip_skip_are_named(pipes):
    with pytest.raises(ValueError, match="emphasis.*'Original'.*'sometimes'"):
        encode_prompt(pipes["sd15"], "fox", steps=4, emphasis="sometimes")
    with pytest.raises(ValueError, match="clip_skip must be between 1 and 4.*got 9"):
        encode_prompt(pipes["sd15"], "fox", steps=4, clip_skip=9)


def test_infotext_names_a_non_default_emphasis_only_when_brackets_are_used(pipes):
    assert encode_prompt(pipes["sd15"], "a (fox)", steps=4, emphasis="No norm").infotext_params() == {
        "TI hashes": None, "Emphasis": "No norm"}
    assert encode_prompt(pipes["sd15"], "a fox", steps=4, emphasis="No norm").infotext_params()["Emphasis"] is None
    assert encode_prompt(pipes["sd15"], "a (fox)", steps=4).infotext_params()["Emphasis"] is None
