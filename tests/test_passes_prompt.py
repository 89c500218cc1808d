"""The prompt language through the passes after the first: the hires pass encodes its own prompt (with prompt
editing over its own steps), LoRA tags only in hr_prompt are refused or named, a batch ended early skips the hires
pass, and the refiner reads the prompt with its own encoder, continuing the editing schedule where the base left
it."""

from __future__ import annotations

import pytest
import torch

from sdart.request import GenerationRequest, RequestError
from sdart.run.conditioning import request_conditioning

FIRST = dict(prompt="a red fox", steps=3, seed=7, sampler_name="Euler", width=64, height=64)
HIRES = dict(FIRST, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2)


def recorded(unet):
    """The positive half of the cross-attention input of every call of `unet` while the block runs."""
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        states = kwargs["encoder_hidden_states"]  # (2·batch, 77·chunks, C): [negative, positive] under guidance
        seen.append(states[states.shape[0] // 2:][0].detach().clone())

    return seen, unet.register_forward_pre_hook(record, with_kwargs=True)


def test_the_hires_pass_encodes_hr_prompt_with_its_own_editing_schedule(tiny_engine):
    # A1111 (reconstruct_cond_batch): step s takes the first text whose end step is ≥ s; here steps 0 and 1 the
    # weighted fox, step 2 the whale.
    hr_prompt = "[a (red:1.3) fox:a blue whale:1]"
    seen, hook = recorded(tiny_engine.model.pipeline.unet)
    try:
        tiny_engine.generate(GenerationRequest.parse({**HIRES, "hr_prompt": hr_prompt, "hr_second_pass_steps": 3}),
                             progress=False)
    finally:
        hook.remove()
    first = tiny_engine.encode_prompt("a red fox", steps=3, sampler_name="Euler")
    hires = tiny_engine.encode_prompt(hr_prompt, steps=3, sampler_name="Euler")
    expected_hires = [hires.at_step(step)["prompt_embeds"][0] for step in (0, 1, 2)]
    assert not torch.equal(expected_hires[0], expected_hires[2])  # the edit does switch within the hires pass
    assert not torch.equal(expected_hires[0], first.at_step(0)["prompt_embeds"][0])  # and the weight counts
    assert len(seen) == 6  # 3 first-pass calls, 3 hires calls
    assert all(torch.equal(states, first.at_step(0)["prompt_embeds"][0]) for states in seen[:3])
    assert all(torch.equal(states, expected) for states, expected in zip(seen[3:], expected_hires))


def test_lora_tags_only_in_hr_prompt_are_refused_by_field_or_named_as_not_applied(tiny_engine):
    fields = {**HIRES, "hr_prompt": "a red fox <lora:ink:0.8>"}
    with pytest.raises(RequestError) as caught:
        tiny_engine.generate(GenerationRequest.parse(fields), progress=False)
    name, _, message = caught.value.errors[0]
    assert name == "hr_prompt" and "<lora:ink:0.8>" in message and "put the tags in the prompt" in message
    # A1111's API draws anyway and says so (missing_lora="warn"); the hires prompt is read without the tag.
    result = tiny_engine.generate(GenerationRequest.parse({**fields, "missing_lora": "warn"}), progress=False)
    assert any("only in hr_prompt (<lora:ink:0.8>)" in warning and "not applied" in warning
               for warning in result.warnings), result.warnings
    assert result.images[0].size == (96, 96)


def test_a_batch_ended_early_skips_the_hires_pass_and_keeps_the_first_pass(tiny_engine):
    """A1111's skip/interrupt during the first pass: no hires pass, the first pass decoded as far as it got."""
    request = tiny_engine.resolve_request(GenerationRequest.parse(HIRES))
    (batch,) = tiny_engine.iter_batches(request, finish_batch=lambda: True)
    assert batch.images[0].size == (64, 64)


@pytest.fixture(scope="module")
def sdxl_engine(tiny_sdxl_dir):
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(tiny_sdxl_dir), settings=Settings(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory):
    from sdart.testing import REFINER, save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-refiner", kind=REFINER, seed=1)


def test_the_refiner_reads_the_prompt_with_its_encoder_and_continues_the_edit(sdxl_engine, refiner_dir):
    prompt = "[a red fox:a (blue:1.2) whale:2]"  # steps 0–2 see the fox, step 3 the whale (A1111's rule)
    request = GenerationRequest.parse(dict(prompt=prompt, seed=3, steps=4, sampler_name="Euler",
                                           refiner_checkpoint=str(refiner_dir), refiner_switch_at=0.5))
    refiner = sdxl_engine._ensure_refiner(request)
    seen, hook = recorded(refiner.pipeline.unet)
    try:
        sdxl_engine.generate(request, progress=False)
    finally:
        hook.remove()
    encoded = request_conditioning(refiner.pipeline, request, None)
    expected = [encoded.at_step(step)["prompt_embeds"][0] for step in (2, 3)]
    assert torch.equal(expected[0], encoded.at_step(0)["prompt_embeds"][0])  # the refiner's first step: the fox
    assert not torch.equal(expected[1], expected[0])  # its second: the whale
    assert len(seen) == 2 and all(torch.equal(got, want) for got, want in zip(seen, expected))
