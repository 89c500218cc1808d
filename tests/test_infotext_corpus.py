"""A corpus of real-world infotexts (tests/infotext_corpus.py): each is read to the right fields, and re-run with
`sdart generate --from` on the tiny model, which names every key it does not apply (the one list in
sdart.a1111_fields) on one `not applied:` line and in `--json`."""

from __future__ import annotations

import json

import pytest
from infotext_corpus import CORPUS, Sample
from PIL import Image
from typer.testing import CliRunner

from sdart.a1111_fields import SETTING_KEYS, asks_nothing, infotext_fields, infotext_targets
from sdart.cli.app import app
from sdart.images.infotext import parse_infotext, png_info
from sdart.request import MAX_SEED
from sdart.sampling.samplers import parse_sampler_name

runner = CliRunner()
# What the re-run sets itself, to stay fast on the tiny model: these keys are the command line's, not the image's.
OVERRIDDEN = {"Steps", "Size", "Model"}


@pytest.mark.parametrize("sample", CORPUS, ids=[s.id for s in CORPUS])
def test_each_sample_reads_to_its_fields(sample: Sample):
    parsed = parse_infotext(sample.text)
    assert (parsed.prompt, parsed.negative_prompt) == (sample.prompt, sample.negative_prompt)
    fields = {**parsed.request_fields(), **infotext_fields(parsed.params)}  # the model is the front end's to find
    assert "model" not in parsed.request_fields()
    assert {name: fields.get(name) for name in sample.fields} == sample.fields
    assert {key: parsed.params.get(key) for key in sample.params} == sample.params
    assert all(key in parsed.params for key in sample.not_applied)


@pytest.mark.parametrize("sample", CORPUS, ids=[s.id for s in CORPUS])
def test_each_sample_reruns_with_from_and_names_what_it_does_not_apply(sample: Sample, tiny_model_dir, tmp_path):
    image = tmp_path / "source.png"
    Image.new("RGB", (8, 8)).save(image, pnginfo=png_info(sample.text))
    args = ["generate", "--from", image, "--model", tiny_model_dir, "--device", "cpu", "--dtype", "float32",
            "--steps", "1", "-W", "64", "-H", "64", "-o", tmp_path / "out", "--json"]
    overridden = set(OVERRIDDEN)
    if int(parse_infotext(sample.text).params.get("Seed", "0")) > MAX_SEED:
        args += ["--seed", "7"]  # the request's seed bound (MAX_SEED) is narrower than the reader
        overridden.add("Seed")
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    not_applied = report["not_applied"]
    # 1. One line on stderr, the same keys as --json.
    if not_applied:
        assert f"not applied: {', '.join(not_applied)}" in " ".join(result.stderr.split())
    assert sample.not_applied <= set(not_applied)
    if "<lora:" in sample.prompt:  # the LoRA files the prompt names are not in this (empty) LoRA folder
        assert "Failed to find networks: add_detail, Pony_Style_XL" in not_applied
    # 2. Every key of the image is applied (its value in the request), descriptive, or named: none is dropped.
    parsed = parse_infotext(sample.text)
    expected = infotext_fields(parsed.params)
    if "Sampler" not in not_applied and "sampler_name" in expected:  # "DPM++ 2M Karras": sampler + schedule type
        sampler, implied = parse_sampler_name(expected["sampler_name"])
        expected["sampler_name"] = sampler.name
        expected["scheduler"] = implied or expected.get("scheduler", "Automatic")
    request = report["request"]
    assert (request["prompt"], request["negative_prompt"]) == (sample.prompt, sample.negative_prompt)
    for key in parsed.params:
        if key in not_applied or key in overridden or asks_nothing(key, parsed.params):
            continue
        if key in SETTING_KEYS and key not in expected:  # an engine setting, applied when the re-run writes the same
            continue
        targets = infotext_targets(key)
        assert targets and all(name in expected for name in targets), f"{key!r} neither applied nor named"
        assert {name: request[name] for name in targets} == {name: expected[name] for name in targets}, key


def test_the_model_and_vae_an_image_names_but_this_machine_lacks_are_named(tiny_model_dir, tmp_path, monkeypatch):
    sample = next(s for s in CORPUS if s.id == "sd-manager-adetailer")
    image = tmp_path / "source.png"
    Image.new("RGB", (8, 8)).save(image, pnginfo=png_info(sample.text))
    monkeypatch.setenv("SDART_MODEL", str(tiny_model_dir))  # the default model; the image's is not here
    result = runner.invoke(app, ["generate", "--from", str(image), "--device", "cpu", "--dtype", "float32",
                                 "--steps", "1", "-W", "64", "-H", "64", "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert {"Model", "VAE"} <= set(json.loads(result.stdout)["not_applied"])
    assert "dreamshaper_8" in result.stderr
