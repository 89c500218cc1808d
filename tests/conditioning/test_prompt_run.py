"""The conditioning inside a run on the tiny SD 1.x engine: what the UNet receives at each model call, and what
the infotext, the Python API and the CLI say about it.

Step counting from A1111: `processing.setup_conds` lays the schedule over `SamplerData.total_steps(steps)` (twice
the steps for `second_order` samplers: Heun, DPM2, DPM++ SDE, …) and `CFGDenoiser` counts every model call from 0,
choosing the first schedule entry whose last step is ≥ the call (`reconstruct_cond_batch`).
"""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from sdart.images.infotext import parse_infotext, read_infotext

EDIT = "a [red:blue:0.5] fox"


@pytest.fixture
def calls(tiny_engine):
    """The positive half of the cross-attention input of every UNet call of the next run."""
    seen = []

    def record(module, args, kwargs):
        states = kwargs["encoder_hidden_states"]  # (2·batch, 77·chunks, C): [negative, positive] under guidance
        seen.append(states[states.shape[0] // 2:][0].detach().clone())

    handle = tiny_engine.model.pipeline.unet.register_forward_pre_hook(record, with_kwargs=True)
    yield seen
    handle.remove()


def texts_of(engine, seen, steps, sampler):
    conditioning = engine.encode_prompt(EDIT, steps=steps, sampler_name=sampler)
    by_text = {text: encoded.embeds[0] for text, encoded in conditioning.prompts.items()}
    return [next(text.split()[1] for text, embeds in by_text.items() if torch.equal(embeds, states))
            for states in seen]


@pytest.mark.parametrize(("sampler", "expected"), [
    # 4 steps, 4 calls; schedule over 4 steps: red while call ≤ int(0.5·4) = 2
    ("Euler", ["red"] * 3 + ["blue"]),
    # Heun: 7 calls (2·4 - 1, as k-diffusion's sample_heun); schedule over 8: red while call ≤ 4
    ("Heun", ["red"] * 5 + ["blue"] * 2),
    # DPM++ SDE: A1111 calls the model twice per step, and so does diffusers' DPMSolverSDEScheduler (sdart.sampling
    # runs it, scheduler order 2): 7 calls as Heun's, schedule over 8, red while call ≤ 4
    ("DPM++ SDE", ["red"] * 5 + ["blue"] * 2),
])
def test_prompt_editing_switches_at_A1111s_model_call(tiny_engine, calls, sampler, expected):
    tiny_engine.generate(prompt=EDIT, steps=4, seed=0, sampler_name=sampler, progress=False)
    assert texts_of(tiny_engine, calls, 4, sampler) == expected


def test_one_call_standing_for_two_counts_double():
    """A scheduler of order 1 running an A1111 second-order sampler: diffusers' call i is A1111's call 2i."""
    from types import SimpleNamespace

    from sdart.run.conditioning import StepConditioning

    conditioning = SimpleNamespace(is_static=False)
    switch = StepConditioning(conditioning, "Heun", batch_size=1)
    assert [switch._a1111_step(SimpleNamespace(scheduler=SimpleNamespace(order=order)), 3) for order in (1, 2)] == [
        6, 3]


def test_a_plain_prompt_reaches_the_unet_unchanged_every_call(tiny_engine, calls):
    result = tiny_engine.generate(prompt="a red fox", steps=3, seed=0, sampler_name="Euler", batch_size=2,
                                  progress=False)
    expected = tiny_engine.encode_prompt("a red fox", steps=3).at_step(0)["prompt_embeds"][0]
    assert len(calls) == 3 and all(torch.equal(states, expected) for states in calls)
    assert len(result.images) == 2


def test_infotext_keeps_the_prompt_and_names_a_non_default_emphasis(tiny_engine):
    result = tiny_engine.generate(prompt="a (red:1.3) fox", steps=2, seed=0, emphasis="No norm", progress=False)
    parsed = parse_infotext(result.infotexts[0])
    assert parsed.prompt == "a (red:1.3) fox" and parsed.params["Emphasis"] == "No norm"
    default = tiny_engine.generate(prompt="a (red:1.3) fox", steps=2, seed=0, progress=False)
    assert "Emphasis" not in parse_infotext(default.infotexts[0]).params


def test_emphasis_changes_the_picture(tiny_engine):
    def pixels(emphasis):
        image = tiny_engine.generate(prompt="a (red:1.8) fox", steps=2, seed=0, emphasis=emphasis,
                                     progress=False).images[0]
        return torch.from_numpy(np.asarray(image, dtype=np.float32))

    assert (pixels("Original") - pixels("Ignore")).abs().mean() > 0.1


def embedding_folder(tmp_path, engine, word="myemb", source="red"):
    pipe = engine.model.pipeline
    ids = pipe.tokenizer(source, add_special_tokens=False, return_tensors="pt").input_ids[0]
    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.save({"string_to_param": {"*": pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone()}},
               folder / f"{word}.pt")
    return folder


def test_engine_with_an_embeddings_folder_draws_the_word_and_hashes_it(tmp_path, tiny_model_dir, tiny_engine):
    from sdart.engine import Engine
    from sdart.settings import Settings

    folder = embedding_folder(tmp_path, tiny_engine)
    engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", embeddings_dir=folder))
    assert engine.embeddings().api()["loaded"]["myemb"]["vectors"] == 3
    with_word = engine.generate(prompt="a myemb fox", steps=2, seed=0, progress=False)
    plain = engine.generate(prompt="a red fox", steps=2, seed=0, progress=False)
    assert np.array_equal(np.asarray(with_word.images[0]), np.asarray(plain.images[0]))
    ti = parse_infotext(with_word.infotexts[0]).params["TI hashes"]
    assert ti == f"myemb: {hashlib.sha256((folder / 'myemb.pt').read_bytes()).hexdigest()[:12]}"  # A1111's short hash
    assert "TI hashes" not in parse_infotext(plain.infotexts[0]).params


def test_a_new_file_in_the_folder_is_picked_up(tmp_path, tiny_model_dir, tiny_engine):
    from sdart.engine import Engine
    from sdart.settings import Settings

    folder = embedding_folder(tmp_path, tiny_engine)
    engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", embeddings_dir=folder))
    (folder / "myemb.pt").rename(folder / "other.pt")
    assert list(engine.embeddings().loaded) == ["other"]


def test_engine_encode_prompt_takes_request_fields(tiny_engine):
    conditioning = tiny_engine.encode_prompt("a [red:blue:0.5] fox BREAK snow", "ugly", steps=10,
                                             sampler_name="Heun")
    assert conditioning.steps == 20 and conditioning.chunks == 2  # Heun: A1111 schedules over 2 × 10
    assert conditioning.at_step(0)["negative_prompt_embeds"].shape == (1, 154, 32)
    with pytest.raises(ValueError, match="emphasis"):
        tiny_engine.encode_prompt("a fox", emphasis="loud")


def test_cli_takes_embeddings_dir_and_emphasis(tmp_path, tiny_model_dir, tiny_engine):
    from typer.testing import CliRunner

    from sdart.cli.app import app

    folder = embedding_folder(tmp_path, tiny_engine)
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["generate", "a (myemb:1.2) fox", "--model", str(tiny_model_dir), "--steps", "2",
                                   "--seed", "0", "--dtype", "float32", "--device", "cpu", "--embeddings-dir",
                                   str(folder), "--emphasis", "No norm", "-o", str(out)])
    assert run.exit_code == 0, run.output
    params = parse_infotext(read_infotext(next(out.glob("*.png")))).params
    assert params["TI hashes"].startswith("myemb: ") and params["Emphasis"] == "No norm"
    assert Image.open(next(out.glob("*.png"))).size == (64, 64)


def test_cli_names_a_missing_embeddings_dir(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from sdart.cli.app import app

    run = CliRunner().invoke(app, ["generate", "a fox", "--model", str(tiny_model_dir), "--embeddings-dir",
                                   str(tmp_path / "nowhere")])
    assert run.exit_code == 2 and "embeddings_dir" in run.output and "nowhere" in run.output


def test_sdxl_prompt_editing_switches_the_pooled_embeds_with_the_cross_attention(tiny_sdxl_dir):
    """SDXL conditions on both the encoders' hidden states and the second encoder's pooled output (the UNet's
    added `text_embeds`); A1111 keeps both per scheduled prompt (its cond dict's `crossattn` and `vector`), so an
    edit switches both at the same model call."""
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(str(tiny_sdxl_dir), settings=Settings(device="cpu", dtype="float32"))
    seen = []

    def record(module, args, kwargs):
        states, pooled = kwargs["encoder_hidden_states"], kwargs["added_cond_kwargs"]["text_embeds"]
        half = states.shape[0] // 2  # [negative, positive] under guidance
        seen.append((states[half:][0].detach().clone(), pooled[half:][0].detach().clone()))

    handle = engine.model.pipeline.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        engine.generate(prompt=EDIT, steps=4, seed=0, sampler_name="Euler", width=64, height=64, progress=False)
    finally:
        handle.remove()
    conditioning = engine.encode_prompt(EDIT, steps=4, sampler_name="Euler")
    expected = [conditioning.at_step(call) for call in range(4)]  # red while call ≤ int(0.5·4) = 2, then blue
    assert not torch.equal(expected[3]["pooled_prompt_embeds"], expected[2]["pooled_prompt_embeds"])
    assert len(seen) == 4
    for (states, pooled), want in zip(seen, expected):
        assert torch.equal(states, want["prompt_embeds"][0])
        assert torch.equal(pooled, want["pooled_prompt_embeds"][0])
