"""The offline test kit builds real, loadable SD-shaped pipelines; everything here runs with no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdart import testing as kit

# kind -> (pipeline class name, native size in px, prediction type)
EXPECTED = {
    "sd15": ("StableDiffusionPipeline", 64, "epsilon"),
    "sd2v": ("StableDiffusionPipeline", 96, "v_prediction"),
    "sdxl": ("StableDiffusionXLPipeline", 128, "epsilon"),
}


def _generate(pipe: Any) -> np.ndarray:
    """2 steps at the native size with a fixed generator -> (1, H, W, 3) floats in [0, 1]."""
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(7)
    return pipe("a fox, 🦊", num_inference_steps=2, generator=generator, output_type="np").images


def _assert_same_weights(a: Any, b: Any) -> None:
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(a, name, None) is None:
            continue
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        differing = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not differing, f"{name}: {differing[:5]}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Per kind: the in-memory pipeline, its diffusers folder and its 2-step reference image."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for kind in kit.KINDS:
        pipe = kit.build_tiny_pipeline(kind, seed=0)
        out[kind] = {"pipe": pipe, "folder": kit.save_tiny_model(root / kind, kind, seed=0), "image": _generate(pipe)}
    return out


def test_tokenizer_loads_offline_and_encodes_any_text(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(kit.write_byte_level_tokenizer(tmp_path), local_files_only=True)
    vocab = kit.byte_level_vocab()
    assert len(tok) == len(vocab) == 514 and tok.model_max_length == 77
    ids = tok("a fox, 🦊", padding="max_length", max_length=tok.model_max_length).input_ids
    fox = [kit.bytes_to_unicode()[b] for b in "🦊".encode()]  # 4 UTF-8 bytes, the last one ends the word
    words = [kit.BOS, "a</w>", "f", "o", "x</w>", ",</w>", *fox[:-1], fox[-1] + "</w>", kit.EOS]
    assert ids == [vocab.index(t) for t in words] + [vocab.index(kit.EOS)] * (77 - len(words))

    open_clip = CLIPTokenizer.from_pretrained(kit.write_byte_level_tokenizer(tmp_path / "oc", pad_token="!"))
    assert open_clip("a", padding="max_length", max_length=77).input_ids[3:] == [0] * 74  # "!" is id 0


def test_components_are_deterministic_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = kit.tiny_sd15_components(seed=1), kit.tiny_sd15_components(seed=1), kit.tiny_sd15_components(seed=2)
    assert torch.equal(torch.rand(3), expected)
    for name in ("unet", "vae", "text_encoder"):
        sa, sb, sc = a[name].state_dict(), b[name].state_dict(), c[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not all(torch.equal(sa[k], sc[k]) for k in sa), name
    assert a["text_encoder"].config.vocab_size == len(a["tokenizer"])


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="sd15"):
        kit.build_tiny_pipeline("sd3")


@pytest.mark.parametrize("kind", kit.KINDS)
def test_saved_folder_reloads_through_diffusers(built: dict[str, dict[str, Any]], kind: str) -> None:
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    cls_name, native, prediction = EXPECTED[kind]
    case = built[kind]
    pipe = DiffusionPipeline.from_pretrained(case["folder"], local_files_only=True)
    assert type(pipe).__name__ == cls_name
    assert type(AutoPipelineForText2Image.from_pretrained(case["folder"], local_files_only=True)).__name__ == cls_name
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.sample_size * 8 == native
    assert pipe.scheduler.config.prediction_type == prediction
    assert all(p.suffix == ".safetensors" for p in case["folder"].rglob("*diffusion_pytorch_model*"))
    _assert_same_weights(case["pipe"], pipe)

    image = _generate(pipe)
    assert image.shape == (1, native, native, 3) and image.std() > 0.01
    # Same weights, but from_pretrained mmaps them at 8-byte-aligned addresses and a 1-row matmul
    # (SDXL's pooled projection) then rounds differently in the last bit: equal to float32 noise, not bits.
    np.testing.assert_allclose(image, case["image"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", kit.KINDS)
def test_single_file_round_trip_is_exact(built: dict[str, dict[str, Any]], kind: str, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    case = built[kind]
    file = kit.save_single_file(case["folder"], tmp_path / f"{kind}.safetensors")
    cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_single_file(str(file), config=str(case["folder"]), local_files_only=True)
    _assert_same_weights(case["pipe"], pipe)
    assert np.array_equal(_generate(pipe), case["image"])


def test_single_file_uses_the_original_ldm_names(built: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors.torch import load_file

    sd15 = load_file(kit.save_single_file(built["sd15"]["pipe"], tmp_path / "a.safetensors", dtype=torch.float16))
    assert {k.split(".")[0] for k in sd15} == {"model", "first_stage_model", "cond_stage_model"}
    assert all(v.dtype == torch.float16 for v in sd15.values())
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",  # conv_in
        "model.diffusion_model.input_blocks.3.0.op.weight",  # level-0 downsampler
        "model.diffusion_model.input_blocks.5.1.proj_in.weight",  # level-1 cross-attention
        "model.diffusion_model.middle_block.2.in_layers.0.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",  # upsampler after an attention
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight",  # 32 -> 16 channels
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ):
        assert key in sd15, key
    assert sd15["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert infer_diffusers_model_type(sd15) == "v1"

    sd2 = load_file(kit.save_single_file(built["sd2v"]["pipe"], tmp_path / "b.safetensors"))
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 48, 48)

    xl = load_file(kit.save_single_file(built["sdxl"]["pipe"], tmp_path / "c.safetensors"))
    assert "model.diffusion_model.label_emb.0.0.weight" in xl
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in xl
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (64, 32)  # (hidden, pooled)
    assert infer_diffusers_model_type(xl) == "xl_base"
