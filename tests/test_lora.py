"""LoRA adapters (sdart.lora): parsed, fused into the weights at load, recorded in the infotext, and refused
with a message that names the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdart.models.lora import LoraRef, parse_lora


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """A LoRA for the tiny SD 1.x model with random (non-zero) up-projections, so that it changes the picture."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sdart.testing import build_tiny_pipeline

    torch.manual_seed(0)
    unet = build_tiny_pipeline("sd15").unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # peft starts B at zero (no change); give it an effect
    folder = tmp_path_factory.mktemp("lora") / "tiny-lora"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(
        get_peft_model_state_dict(unet)))
    return folder / "pytorch_lora_weights.safetensors"


@pytest.mark.parametrize("text, expected", [
    ("latent-consistency/lcm-lora-sdv1-5", LoraRef("latent-consistency/lcm-lora-sdv1-5", 1.0)),
    ("style.safetensors:0.6", LoraRef("style.safetensors", 0.6)),
    ("/loras/a:b.safetensors", LoraRef("/loras/a:b.safetensors", 1.0)),  # a colon that is no scale
])
def test_references_and_scales_are_parsed(text, expected):
    assert parse_lora(text) == expected


def _engine(model_dir, **settings):
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(model_dir), settings=Settings(device="cpu", dtype="float32", **settings))


def _pixels(engine):
    result = engine.generate(prompt="a fox", steps=2, seed=5, progress=False)
    return np.asarray(result.images[0], dtype=np.int16), result.infotexts[0]


def test_lora_is_fused_into_the_weights_and_named_in_the_infotext(tiny_model_dir, tiny_engine, tiny_lora):
    plain, plain_info = _pixels(tiny_engine)
    engine = _engine(tiny_model_dir, loras=[f"{tiny_lora}:0.8"])
    unet = engine.model.pipeline.unet
    assert not any("lora" in name for name, _ in unet.named_modules())  # adapter layers gone: fused
    styled, info = _pixels(engine)
    assert np.abs(styled - plain).mean() > 1.0  # the adapter changes the picture
    assert 'Lora: "pytorch_lora_weights:0.8"' in info and "Lora" not in plain_info

    # Scale 0 fuses nothing: the picture of the plain model, up to float rounding.
    unchanged, _ = _pixels(_engine(tiny_model_dir, loras=[f"{tiny_lora}:0"]))
    assert np.abs(unchanged - plain).max() <= 1


def test_lora_combines_with_int8_and_fused_qkv(tiny_model_dir, tiny_lora):
    from sdart.speed.quant import Int8Linear

    engine = _engine(tiny_model_dir, loras=[str(tiny_lora)], quantize="int8")
    unet = engine.model.pipeline.unet
    assert any(isinstance(m, Int8Linear) for m in unet.modules())
    with_lora, _ = _pixels(_engine(tiny_model_dir, loras=[str(tiny_lora)]))
    without, _ = _pixels(_engine(tiny_model_dir, quantize="int8"))
    quantized, _ = _pixels(engine)
    # The LoRA survives quantization (fused first, then rounded): the int8 picture is the LoRA's, not the plain one.
    to_lora, to_plain = np.abs(quantized - with_lora).mean(), np.abs(quantized - without).mean()
    assert to_lora < 0.5 * to_plain


def test_a_missing_lora_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"lora = .*nope.*could not be loaded"):
        _engine(tiny_model_dir, loras=[str(tmp_path / "nope")])


def test_cli_takes_lora_and_rejects_an_empty_one(tiny_model_dir, tiny_lora, tmp_path):
    from typer.testing import CliRunner

    from sdart.cli.app import app
    from sdart.images.infotext import parse_infotext, read_infotext

    runner = CliRunner()
    result = runner.invoke(app, ["generate", "a fox", "--model", str(tiny_model_dir), "--steps", "1", "--seed", "1",
                                 "--dtype", "float32", "--lora", f"{tiny_lora}:0.5", "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    png = next(tmp_path.glob("*.png"))
    assert parse_infotext(read_infotext(png)).params["Lora"] == "pytorch_lora_weights:0.5"
    result = runner.invoke(app, ["generate", "a fox", "--model", str(tiny_model_dir), "--lora", "", "-o", str(tmp_path)])
    assert result.exit_code != 0 and "lora = ''" in result.output
