"""The shapes data generator, its checker and tokenizer files (fast: no training).

Run with `python -m pytest training/tests`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.shapes_data import (
    COLORS,
    SHAPES,
    Combo,
    all_combos,
    analyze_image,
    caption_vocabulary,
    check_image,
    draw,
    held_out_combos,
    make_dataset,
    train_combos,
)

MODEL_DIR = Path(__file__).resolve().parents[2] / "src/sdart/builtin/shapes"


def test_dataset_is_deterministic_in_its_seed():
    a_img, a_s = make_dataset(50, seed=7)
    b_img, b_s = make_dataset(50, seed=7)
    c_img, c_s = make_dataset(50, seed=8)
    assert np.array_equal(a_img, b_img) and a_s == b_s
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (50, 64, 64, 3) and a_img.dtype == np.uint8


def test_held_out_combos_are_fixed_and_never_drawn_for_training():
    held = held_out_combos()
    assert held == held_out_combos() and len(held) == 36
    assert set(held).isdisjoint(train_combos())
    assert len(train_combos()) + len(held) == len(all_combos()) == 10 * 4 * 9
    _, samples = make_dataset(3000, seed=0)
    assert {s.combo for s in samples}.isdisjoint(held)
    # every colour, shape and background is still taught, only these pairings are new
    tc = train_combos()
    assert {c.color for c in tc} == set(COLORS) and {c.bg for c in tc} == set(COLORS)
    assert {c.shape for c in tc} == set(SHAPES)


def test_background_differs_from_shape_colour():
    assert all(c.color != c.bg for c in all_combos())


def test_captions_name_what_is_drawn_in_several_templates():
    _, samples = make_dataset(400, seed=1)
    vocab = set(caption_vocabulary())
    starts = set()
    for s in samples:
        words = s.caption.replace(",", " ").split()
        assert s.color in words and s.shape in words and s.bg in words, s.caption
        assert set(words) <= vocab, s.caption
        starts.add(" ".join(words[:2]))
    assert len({s.caption.split()[0] for s in samples}) >= 4 and len(starts) > 10
    assert "an orange" in " ".join(s.caption for s in samples) and "a orange" not in " ".join(s.caption for s in samples)


def test_checker_reads_generated_pictures():
    images, samples = make_dataset(600, seed=3)
    held_imgs, held_samples = make_dataset(200, seed=4, combos=held_out_combos())
    ok = [check_image(i, s)["all_ok"] for i, s in zip(list(images) + list(held_imgs), samples + held_samples)]
    assert np.mean(ok) >= 0.99


@pytest.mark.parametrize("shape", SHAPES)
def test_checker_names_each_shape_and_colour(shape):
    img = draw("red", shape, "blue", 30, 32, 32)
    r = check_image(img, Combo("red", shape, "blue"))
    assert r["all_ok"], r
    wrong = check_image(img, Combo("green", shape, "yellow"))
    assert not wrong["color_ok"] and not wrong["bg_ok"] and wrong["shape_ok"]


def test_checker_accepts_float_images_and_plain_backgrounds():
    img = draw("yellow", "square", "black", 24, 20, 40).astype(np.float32) / 255
    assert check_image(img, {"color": "yellow", "shape": "square", "bg": "black"})["all_ok"]
    blank = np.full((64, 64, 3), 250, np.uint8)
    found = analyze_image(blank)
    assert found["bg"] == "white" and found["shape"] is None and found["color"] is None


def test_tokenizer_files_make_caption_words_single_tokens(tmp_path):
    from transformers import CLIPTokenizer

    from training.shapes_model import write_tokenizer

    write_tokenizer(tmp_path)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))  # offline, from files only
    assert tok.model_max_length == 77
    for w in caption_vocabulary():
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    ids = tok("a red circle on a blue background", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and ids[8] == tok.eos_token_id
    # any prompt at all: bytes the vocabulary has no word for fall back to byte tokens
    weird = tok("Ünïcödé 日本語 🎨 <html> 1234 !!", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(weird) == 77 and max(weird) < len(tok)


def test_center_latents_keeps_reconstruction():
    import torch

    from training.shapes_model import ModelConfig, make_vae
    from training.train_shapes import _to_tensor, center_latents

    torch.manual_seed(0)
    vae = make_vae(ModelConfig(vae_channels=(16, 16)))
    x = _to_tensor(make_dataset(4, seed=0)[0])
    with torch.no_grad():
        before = vae.encode(x).latent_dist.mean
        recon = vae.decode(before).sample
        centred = center_latents(vae, before)
        after = vae.encode(x).latent_dist.mean
        assert torch.allclose(after, centred, atol=1e-4)
        assert after.mean(dim=(0, 2, 3)).abs().max() < 1e-4
        assert torch.allclose(vae.decode(after).sample, recon, atol=1e-4)


@pytest.mark.skipif(not (MODEL_DIR / "model_index.json").exists(), reason="model folder not trained yet")
def test_bundled_folder_is_sd1_layout_and_small():
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (MODEL_DIR / part).is_dir(), part
    weights = list(MODEL_DIR.rglob("*.safetensors"))
    assert len(weights) == 3 and not list(MODEL_DIR.rglob("*.bin"))
    assert sum(f.stat().st_size for f in weights) <= 25 * 2**20
