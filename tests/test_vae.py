"""A replacement VAE (--vae): TAESD-style AutoencoderTiny or another AutoencoderKL, loaded by its config's class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdart.models.errors import ModelLoadError


@pytest.fixture(scope="module")
def tiny_taesd(tmp_path_factory):
    """An AutoencoderTiny shaped like TAESD (4 blocks: 8× up, 4 latent channels), tiny and random."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    folder = tmp_path_factory.mktemp("vae") / "tiny-taesd"
    vae.save_pretrained(folder)
    return folder


def _engine(model_dir, **settings):
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(model_dir), settings=Settings(device="cpu", dtype="float32", **settings))


def test_tiny_vae_replaces_the_decoder(tiny_model_dir, tiny_engine, tiny_taesd, monkeypatch):
    import sdart.models.streaming

    streamed = []
    real = sdart.models.streaming.load_model
    monkeypatch.setattr(sdart.models.streaming, "load_model",
                        lambda cls, *args, **kw: streamed.append(cls.__name__) or real(cls, *args, **kw))
    engine = _engine(tiny_model_dir, vae=str(tiny_taesd))
    assert streamed == ["UNet2DConditionModel"]  # the model's own VAE is never loaded
    assert type(engine.model.pipeline.vae).__name__ == "AutoencoderTiny"
    result = engine.generate(prompt="a fox", steps=2, seed=3, progress=False)
    plain = tiny_engine.generate(prompt="a fox", steps=2, seed=3, progress=False)
    assert result.images[0].size == plain.images[0].size
    assert np.abs(np.asarray(result.images[0], np.int16) - np.asarray(plain.images[0], np.int16)).mean() > 1
    assert "VAE: tiny-taesd" in result.infotexts[0] and "VAE:" not in plain.infotexts[0]


def test_a_vae_that_is_not_there_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"^vae = '.*missing-vae'"):
        _engine(tiny_model_dir, vae=str(tmp_path / "missing-vae"))
