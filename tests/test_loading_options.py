"""fp16 weight variants, .env settings and the opt-in safety checker."""

import os

import numpy as np
import pytest
import torch

from sdart.models.load import load
from sdart.models.resolve import resolve


def test_half_precision_prefers_the_fp16_variant_and_falls_back(monkeypatch):
    from diffusers import AutoPipelineForText2Image

    calls = []

    def fake(location, **kwargs):
        calls.append(kwargs.get("variant"))
        if kwargs.get("variant") == "fp16":
            raise ValueError("You are trying to load model files of the `variant=fp16`, but no such modeling files are available.")
        raise RuntimeError("stop here")  # the fallback call was made; nothing more to load

    monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", fake)
    with pytest.raises(Exception, match="stop here"):
        load(resolve("org/model"), torch.bfloat16)
    assert calls == ["fp16", None]
    calls.clear()
    with pytest.raises(Exception):
        load(resolve("org/model"), torch.float32)
    assert calls == [None]  # full precision never asks for the half variant


def test_local_fp16_variant_is_loaded_in_half_precision(tmp_path):
    from sdart.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd15")
    folder = tmp_path / "variant-only"
    pipe.to(torch.bfloat16).save_pretrained(folder, variant="fp16")
    assert list(folder.glob("unet/*.fp16.safetensors"))
    loaded = load(resolve(str(folder)), torch.bfloat16)
    assert loaded.pipeline.unet.dtype == torch.bfloat16


def test_dotenv_is_exported_before_the_hub_reads_it(isolated_user_env):
    from sdart.settings import load_settings

    (isolated_user_env / ".env").write_text("HF_TOKEN=hf_from_dotenv\nSDART_MEMORY=low\nSDART_OUTPUT_DIR=art\n")
    os.environ["SDART_OUTPUT_DIR"] = "from-env"  # real environment wins over .env
    try:
        settings = load_settings(memory=None)
        assert os.environ["HF_TOKEN"] == "hf_from_dotenv"
        assert settings.memory == "low" and str(settings.output_dir) == "from-env"
        assert load_settings(memory="minimal").memory == "minimal"  # flags win over both
        from huggingface_hub import get_token

        assert get_token() == "hf_from_dotenv"
    finally:
        os.environ.pop("SDART_OUTPUT_DIR")
        os.environ.pop("HF_TOKEN", None)


def _model_with_always_flagging_checker(folder):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    from sdart.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd15")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every cosine similarity exceeds its threshold: always flagged
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe.register_modules(safety_checker=checker, feature_extractor=extractor)
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(folder)
    return folder


def test_safety_checker_reports_flagged_images_without_blackening(tmp_path):
    from sdart.engine import Engine
    from sdart.settings import Settings

    folder = _model_with_always_flagging_checker(tmp_path / "checked")
    settings = Settings(device="cpu", dtype="float32")
    checked = Engine(str(folder), settings=settings, safety_checker=True)
    result = checked.generate(prompt="x", steps=2, seed=1, batch_size=2, progress=False)
    assert result.nsfw == [True, True]
    assert all(np.asarray(image).max() > 0 for image in result.images)  # reported, not blackened
    unchecked = Engine(str(folder), settings=settings)
    plain = unchecked.generate(prompt="x", steps=2, seed=1, progress=False)
    assert plain.nsfw is None and unchecked.model.pipeline.safety_checker is None
    assert np.array_equal(np.asarray(plain.images[0]), np.asarray(result.images[0]))
