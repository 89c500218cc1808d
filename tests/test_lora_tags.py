"""`<lora:NAME:WEIGHT>` prompt tags: parsed as A1111 parses them, looked up in the LoRA folder, applied to one
request's weights and taken off again bit for bit, named in the infotext, refused or reported when they can't be.

Expected values come from A1111's sources: `modules/extra_networks.py` (the tag pattern `<(\\w+):([^>]+)>`, `:`
between arguments, `key=value` named), `extensions-builtin/Lora/extra_networks_lora.py` (te weight 1.0 by default,
unet = te unless given, dyn the fourth), `network.py` / `hashes.py` (the hash: sha256 of the file after its
safetensors header, 12 hex digits shown), `network_lora.py` (ΔW = up @ down × alpha / rank × weight); diffusers'
own LoRA loader (`load_lora_weights` + `fuse_lora`) is the numerical reference for the layer matching.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch

from sdart.conditioning.extra_networks import ExtraNetwork, LoraWeights, extract_extra_networks
from sdart.models.lorafiles import LoraFolder
from sdart.models.loraswitch import AppliedLora, LoraSwitch, unsupported_reason
from sdart.testing import build_tiny_pipeline
from sdart.testing.lora import lora_pairs, save_lora

# --- the tags -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag, weights", [
    ("<lora:ink>", LoraWeights(1.0, 1.0, None)),
    ("<lora:ink:0.8>", LoraWeights(0.8, 0.8, None)),
    ("<lora:ink:-0.5>", LoraWeights(-0.5, -0.5, None)),  # a negative weight pushes away from the style
    ("<lora:ink:0.5:1.2>", LoraWeights(0.5, 1.2, None)),
    ("<lora:ink:te=0.3:unet=0.7>", LoraWeights(0.3, 0.7, None)),
    ("<lora:ink:unet=0.7>", LoraWeights(1.0, 0.7, None)),
    ("<lora:ink:1:1:8>", LoraWeights(1.0, 1.0, 8)),
    ("<lora:ink:0.6:dyn=4>", LoraWeights(0.6, 0.6, 4)),
])
def test_weights_read_as_a1111_reads_them(tag, weights):
    _, (network,) = extract_extra_networks(tag)
    assert (network.kind, network.name) == ("lora", "ink")
    assert network.lora_weights() == weights


def test_tags_leave_the_rest_of_the_prompt_byte_for_byte():
    text = "a (fox:1.2), <lora:ink:0.8> in [snow|rain]  <hypernet:old:1>\nBREAK <lyco:my style v1.5:0.7>!"
    stripped, networks = extract_extra_networks(text)
    assert stripped == "a (fox:1.2),  in [snow|rain]  \nBREAK !"
    assert networks == [ExtraNetwork("lora", "ink", ("0.8",)), ExtraNetwork("hypernet", "old", ("1",)),
                        ExtraNetwork("lyco", "my style v1.5", ("0.7",))]
    assert [n.is_lora for n in networks] == [True, False, True]  # A1111 reads <lyco:…> as a LoRA too
    assert extract_extra_networks("no tags, <not a tag>, <lora:>") == ("no tags, <not a tag>, <lora:>", [])


@pytest.mark.parametrize("tag, message", [
    ("<lora:ink:strong>", "weight 'strong' is not a number"),
    ("<lora:ink:nan>", "weight 'nan' is not a number"),
    ("<lora:ink:1:2:3:4>", "at most three values"),
    ("<lora:ink:dyn=0>", "dyn = '0' is not a rank"),
    ("<lora:ink:scale=2>", "unknown argument scale="),
])
def test_a_bad_weight_is_an_error_naming_the_tag(tag, message):
    _, (network,) = extract_extra_networks(tag)
    with pytest.raises(ValueError, match=message) as caught:
        network.lora_weights()
    assert "<lora:ink" in str(caught.value)


# --- the folder -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd15_pipe():
    """An unfused copy of the tiny SD 1.x model (the one `tiny_model_dir` saves: same seed, same layers)."""
    return build_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, sd15_pipe):
    folder = tmp_path_factory.mktemp("Lora")
    save_lora(sd15_pipe, folder / "ink.safetensors", alpha=2, strength=3.0, seed=1)
    save_lora(sd15_pipe, folder / "styles" / "watercolour.safetensors", layout="diffusers", strength=3.0, seed=2,
              metadata=None)
    save_lora(sd15_pipe, folder / "trained.safetensors", alpha=4, seed=3,
              metadata={"ss_output_name": "pencil", "ss_network_dim": "4", "ssmd_cover_images": "[…]"})
    (folder / "legacy.pt").write_bytes(b"pickled")
    return folder


def addnet_hash(path) -> str:
    """kohya-ss / A1111 "addnet" hash, written out here: sha256 of everything after the 8-byte header length and
    the JSON header."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + size:]).hexdigest()


def test_the_folder_lists_files_by_stem_with_aliases_metadata_and_a1111_hashes(lora_dir):
    folder = LoraFolder(lora_dir)
    listing = {entry["name"]: entry for entry in folder.listing()}
    assert sorted(listing) == ["ink", "trained", "watercolour"]  # subfolders too; the pickled .pt is not read
    assert listing["trained"] == {"name": "trained", "alias": "pencil", "path": str(lora_dir / "trained.safetensors"),
                                  "metadata": {"ss_output_name": "pencil", "ss_network_dim": "4"}}
    assert listing["ink"]["alias"] == "ink" and listing["ink"]["metadata"] == {}
    assert folder.find("pencil").name == "trained" and folder.find("watercolour").path.parent.name == "styles"
    ink = folder.find("ink")
    assert ink.hash == addnet_hash(ink.path) and ink.short_hash == ink.hash[:12]
    assert folder.find_by_hash(ink.short_hash) is ink
    assert folder.find("nope") is None


def test_a_recorded_hash_is_taken_and_a_new_file_is_found_without_a_restart(tmp_path, sd15_pipe):
    folder = LoraFolder(tmp_path)
    assert len(folder) == 0
    save_lora(sd15_pipe, tmp_path / "late.safetensors", metadata={"sshs_model_hash": "ab" * 32})
    assert folder.find("late").short_hash == "ab" * 6  # a miss lists the folder again (A1111 does the same)



def test_a_miss_lists_the_folder_again_but_reads_only_the_files_that_changed(lora_dir, tmp_path, monkeypatch,
                                                                              sd15_pipe):
    import shutil

    import sdart.models.lorafiles as lorafiles

    folder = LoraFolder(shutil.copytree(lora_dir, tmp_path / "loras"))
    ink = folder.find("ink").path
    reads = []
    read_metadata = lorafiles.read_metadata
    monkeypatch.setattr(lorafiles, "read_metadata", lambda path: reads.append(path.name) or read_metadata(path))
    assert folder.find("nope") is None and folder.find("nor-this") is None
    assert reads == []  # two misses listed the folder twice: a stat per file, no header read again
    save_lora(sd15_pipe, ink, metadata={"ss_output_name": "quill"})  # the file rewritten in place
    assert folder.find("quill").name == "ink"
    assert reads == ["ink.safetensors"]

# --- the weights ----------------------------------------------------------------------------------------------


def pixels(pipe, prompt="a fox"):
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    return pipe(prompt=prompt, num_inference_steps=2, generator=generator, output_type="np").images[0]


def state(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in ("unet", "text_encoder") for k, v in getattr(pipe, c).state_dict().items()}


def diffusers_fused(file, weight: float):
    """The reference: diffusers' own loader (kohya conversion included), fused at `weight`, on a fresh copy."""
    pipe = build_tiny_pipeline("sd15")
    pipe.load_lora_weights(str(file.path.parent), weight_name=file.path.name, adapter_name="ref")
    pipe.set_adapters(["ref"], adapter_weights=[weight])
    pipe.fuse_lora(adapter_names=["ref"])
    pipe.unload_lora_weights()
    return pipe


@pytest.mark.parametrize("fused", [False, True], ids=["separate-qkv", "fused-qkv"])
@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_a_lora_draws_what_diffusers_draws_and_comes_off_bit_for_bit(tmp_path, sd15_pipe, layout, fused):
    from sdart.speed.options import fuse_qkv

    path = save_lora(sd15_pipe, tmp_path / f"{layout}.safetensors", layout=layout, alpha=2, strength=2.0)
    file = LoraFolder(tmp_path).find(layout)
    expected = pixels(diffusers_fused(file, 0.7))
    pipe = build_tiny_pipeline("sd15")
    if fused:
        fuse_qkv(pipe)  # sdart's speed setting: the q/k/v LoRA layers go into rows of one projection
    before, weights = pixels(pipe), state(pipe)
    switch = LoraSwitch(pipe)
    with switch.applied([AppliedLora(file, LoraWeights(0.7, 0.7))]):
        styled = pixels(pipe)
    assert np.abs(styled - before).max() > 0.02  # the LoRA changes the picture
    assert np.abs(styled - expected).max() < 1e-5, path  # as diffusers applies it (float rounding apart)
    after = state(pipe)
    assert all(after[k] is weights[k] or torch.equal(after[k], weights[k]) for k in weights)
    assert np.array_equal(pixels(pipe), before)  # the loaded weights were never written to


def test_diffusers_trainer_names_read_like_peft_names(tmp_path, sd15_pipe):
    """diffusers' trainers write `to_q.lora.down.weight` but `ff.net.2.lora_A.weight` in one file; the same pairs
    written both ways make the same weights."""
    save_lora(sd15_pipe, tmp_path / "a.safetensors", layout="diffusers", seed=4)
    save_lora(sd15_pipe, tmp_path / "b.safetensors", layout="peft", seed=4)
    folder = LoraFolder(tmp_path)
    patched = []
    for name in ("a", "b"):
        pipe = build_tiny_pipeline("sd15")
        with LoraSwitch(pipe).applied([AppliedLora(folder.find(name))]):
            patched.append(state(pipe))
    assert all(torch.equal(patched[0][k], patched[1][k]) for k in patched[0])
    plain = state(sd15_pipe)
    changed = [k for k in plain if not torch.equal(plain[k], patched[0][k])]
    assert len(changed) == len(lora_pairs(sd15_pipe))  # every layer of the file, text encoder included


def test_te_unet_dyn_and_negative_weights_scale_the_change_as_a1111(tmp_path, sd15_pipe):
    save_lora(sd15_pipe, tmp_path / "k.safetensors", alpha=2, rank=4, seed=5)
    file = LoraFolder(tmp_path).find("k")
    down, up = lora_pairs(sd15_pipe, rank=4, seed=5)[("unet", "mid_block.attentions.0.proj_out")]
    layer = "unet.mid_block.attentions.0.proj_out.weight"
    plain = state(sd15_pipe)

    def delta(weights: LoraWeights) -> dict[str, torch.Tensor]:
        pipe = build_tiny_pipeline("sd15")
        with LoraSwitch(pipe).applied([AppliedLora(file, weights)]):
            return {k: v - plain[k] for k, v in state(pipe).items()}

    full = delta(LoraWeights(1.0, 1.0))
    # network_lora: ΔW = up @ down × alpha / rank × weight (a 1×1 conv: up (out, r, 1, 1), down (r, in, 1, 1)).
    expected = (up.flatten(1) @ down.flatten(1) * 2 / 4).reshape(plain[layer].shape)
    assert torch.allclose(full[layer], expected, atol=1e-6)
    negative = delta(LoraWeights(-0.5, -0.5))
    assert torch.allclose(negative[layer], -0.5 * expected, atol=1e-6)
    unet_only = delta(LoraWeights(te=0.0, unet=1.0))
    assert all(not d.any() for k, d in unet_only.items() if k.startswith("text_encoder."))
    assert torch.equal(unet_only[layer], full[layer])
    te_only = delta(LoraWeights(te=1.0, unet=0.0))
    assert all(not d.any() for k, d in te_only.items() if k.startswith("unet."))
    dyn = delta(LoraWeights(1.0, 1.0, dyn=2))  # DyLoRA: the first 2 ranks, the scale keeps alpha / 4
    expected_dyn = (up.flatten(1)[:, :2] @ down.flatten(1)[:2] * 2 / 4).reshape(plain[layer].shape)
    assert torch.allclose(dyn[layer], expected_dyn, atol=1e-6)


def test_int8_weights_are_requantized_with_the_lora_and_restored(tmp_path, sd15_pipe):
    from sdart.speed.quant import Int8Linear, quantize_int8

    save_lora(sd15_pipe, tmp_path / "k.safetensors", alpha=4, strength=3.0)
    file = LoraFolder(tmp_path).find("k")
    float_styled = pixels(diffusers_fused(file, 1.0))
    pipe = build_tiny_pipeline("sd15")
    quantize_int8(pipe.unet)
    quantize_int8(pipe.text_encoder)
    assert any(isinstance(m, Int8Linear) for m in pipe.unet.modules())
    plain, buffers = pixels(pipe), state(pipe)
    with LoraSwitch(pipe).applied([AppliedLora(file)]):
        styled = pixels(pipe)
    # Rounding the patched weights to int8 keeps the LoRA: the picture is the LoRA's, not the plain one.
    assert np.abs(styled - float_styled).mean() < 0.5 * np.abs(plain - float_styled).mean()
    after = state(pipe)
    assert all(torch.equal(after[k], v) for k, v in buffers.items()) and np.array_equal(pixels(pipe), plain)


def sgm_name(name: str, layers_per_block: int) -> str:
    """A diffusers UNet layer name in the original SGM UNet's numbering, as kohya's SDXL LoRAs write it (the
    inverse of diffusers' `_maybe_map_sgm_blocks_to_diffusers`; A1111 `convert_diffusers_name_to_compvis`)."""
    parts = name.split(".")
    step = layers_per_block + 1
    if parts[0] == "down_blocks":
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        head = f"input_blocks.{1 + block * step + index}.{1 if kind == 'attentions' else 0}"
    elif parts[0] == "up_blocks":
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        head = f"output_blocks.{block * step + index}.{1 if kind == 'attentions' else 0}"
    else:  # mid_block: resnet 0, attention, resnet 1
        head, rest = f"middle_block.{1 if parts[1] == 'attentions' else 2 * int(parts[2])}", parts[3:]
    inner = {"conv1": "in_layers.2", "conv2": "out_layers.3"}
    return ".".join([head, *(inner.get(p, p) for p in rest)]).replace(".", "_")


def test_sdxl_kohya_files_in_sgm_numbering_match_as_diffusers_matches_them(tmp_path):
    from safetensors.torch import save_file

    pipe = build_tiny_pipeline("sdxl")
    pairs = lora_pairs(pipe, rank=2, strength=3.0, text_encoder=False,
                       unet_layers=("attn1.to_q", "attn2.to_v", "ff.net.2", "conv1"))
    lpb = pipe.unet.config.layers_per_block
    tensors = {}
    for (_, name), (down, up) in pairs.items():
        key = "lora_unet_" + sgm_name(name, lpb)
        tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(2.0)}
    assert any("input_blocks" in k for k in tensors) and any("in_layers_2" in k for k in tensors)
    save_file(tensors, str(tmp_path / "xl.safetensors"))
    file = LoraFolder(tmp_path).find("xl")
    reference = build_tiny_pipeline("sdxl")
    reference.load_lora_weights(str(tmp_path), weight_name="xl.safetensors", adapter_name="ref")
    reference.fuse_lora(adapter_names=["ref"])
    reference.unload_lora_weights()
    ours = build_tiny_pipeline("sdxl")
    switch = LoraSwitch(ours)
    assert len(switch.layers(file)) == len(pairs)  # every layer found under its diffusers name
    with switch.applied([AppliedLora(file)]):
        assert np.abs(pixels(ours) - pixels(reference)).max() < 1e-5


def test_a_lora_for_another_model_is_refused_naming_the_file(tmp_path):
    from sdart.models.loraweights import LoraFormatError

    # SD 2.x's cross-attention reads 48-wide text (SD 1.x's: 32): the same layer names, other sizes.
    save_lora(build_tiny_pipeline("sd2v"), tmp_path / "v2.safetensors", text_encoder=False,
              unet_layers=("attn2.to_k", "attn2.to_v"))
    pipe = build_tiny_pipeline("sd15")
    with pytest.raises(LoraFormatError, match=r"'v2' .*v2\.safetensors.* fits no layer of the loaded model"):
        LoraSwitch(pipe).apply([AppliedLora(LoraFolder(tmp_path).find("v2"))])
    with pytest.raises(LoraFormatError, match=r"a LoHa network"):
        from safetensors.torch import save_file

        save_file({"lora_unet_mid_block_attentions_0_proj_out.hada_w1_a": torch.ones(2, 2)},
                  str(tmp_path / "loha.safetensors"))
        LoraSwitch(pipe).layers(LoraFolder(tmp_path).find("loha"))


def test_settings_that_keep_their_own_weights_are_named():
    assert "--compile" in unsupported_reason(compiled=True, memory="balanced", device=torch.device("cpu"))
    assert "--memory minimal" in unsupported_reason(compiled=False, memory="minimal", device=torch.device("cuda"))
    # On the CPU, --memory minimal only tiles the VAE: the weights stay where they are, and patching works.
    assert unsupported_reason(compiled=False, memory="minimal", device=torch.device("cpu")) is None


# --- through the engine, the CLI and the server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tag_engine(tiny_model_dir, lora_dir):
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", lora_dir=lora_dir))


def draw(engine, prompt, **fields):
    result = engine.generate(prompt=prompt, **{"steps": 2, "seed": 5, **fields}, progress=False)
    return np.asarray(result.images[0], dtype=np.int16), result


def test_a_tag_applies_to_its_own_job_only_and_the_infotext_names_it(tag_engine):
    plain, plain_result = draw(tag_engine, "a fox")
    styled, styled_result = draw(tag_engine, "a fox <lora:ink:0.8>")
    after, _ = draw(tag_engine, "a fox")
    assert np.abs(styled - plain).mean() > 1.0  # the tag changes the picture
    assert np.array_equal(after, plain)  # and the next job draws exactly what it drew before
    ink = tag_engine.lora_folder.find("ink")
    info = styled_result.infotexts[0]
    assert info.startswith("a fox <lora:ink:0.8>\n")  # the prompt as typed, tag kept
    assert f'Lora hashes: "ink: {ink.short_hash}"' in info
    assert "Lora hashes" not in plain_result.infotexts[0] and not styled_result.warnings
    # The alias from the file's metadata finds it too, and the infotext says the name the prompt used.
    _, alias_result = draw(tag_engine, "a fox <lora:pencil>")
    assert f'Lora hashes: "pencil: {tag_engine.lora_folder.find("trained").short_hash}"' in alias_result.infotexts[0]


def test_on_a_compiled_unet_tags_are_refused_or_named_and_left_out(tag_engine):
    """The engine's own check reaches the tags: strict front ends refuse, A1111's API draws without and says so."""
    from sdart.request import GenerationRequest, RequestError
    from sdart.run.loras import request_loras

    unet = tag_engine.ready.pipeline.unet
    unet._orig_mod = object()  # what torch.compile's wrapper carries
    try:
        request = GenerationRequest.parse(prompt="a fox <lora:ink:0.8>")
        settings = dict(memory="balanced", device=torch.device("cpu"))
        with pytest.raises(RequestError) as caught:
            request_loras(request, tag_engine.lora_folder, tag_engine.ready, **settings)
        assert caught.value.errors[0][0] == "prompt" and "--compile" in caught.value.errors[0][2]
        lenient = request_loras(request.replace(missing_lora="warn"), tag_engine.lora_folder, tag_engine.ready,
                                **settings)
        assert lenient.loras == [] and any("ink" in w and "not applied" in w for w in lenient.warnings)
    finally:
        del unet._orig_mod


def test_an_unknown_name_is_an_error_naming_it_and_the_folder_or_a_warning_on_request(tag_engine, lora_dir):
    from sdart.request import RequestError

    with pytest.raises(RequestError) as caught:
        draw(tag_engine, "a fox <lora:nope:0.5>")
    (field, _, message), = caught.value.errors
    assert field == "prompt" and "'nope'" in message and str(lora_dir) in message
    plain, _ = draw(tag_engine, "a fox")
    warned, result = draw(tag_engine, "a fox <lora:nope:0.5> <hypernet:old:1>", missing_lora="warn")
    assert result.warnings == ["Failed to find networks: nope",  # A1111's words
                               "<hypernet:old:1>: sdart applies no 'hypernet' networks, only lora"]
    assert np.array_equal(warned, plain) and "Lora hashes" not in result.infotexts[0]  # drawn without them
    _, negative = draw(tag_engine, "a fox", negative_prompt="ugly <lora:ink>")
    assert len(negative.warnings) == 1 and "negative prompt: not applied" in negative.warnings[0]


def test_on_the_shapes_model_the_next_job_draws_the_same_pixels(tmp_path):
    from diffusers import StableDiffusionPipeline

    import sdart
    from sdart.engine import Engine
    from sdart.settings import Settings

    shapes = StableDiffusionPipeline.from_pretrained(str(sdart.__path__[0] + "/builtin/shapes"))
    save_lora(shapes, tmp_path / "bold.safetensors", alpha=4, strength=4.0)
    engine = Engine("builtin:shapes", settings=Settings(device="cpu", dtype="float32", lora_dir=tmp_path))
    red = "a red circle on a white background"
    plain, _ = draw(engine, red, steps=4)
    styled, styled_result = draw(engine, f"{red} <lora:bold>", steps=4)
    again, _ = draw(engine, red, steps=4)
    assert np.abs(styled - plain).mean() > 2.0 and np.array_equal(again, plain)
    assert 'Lora hashes: "bold: ' in styled_result.infotexts[0]


def test_cli_refuses_an_unknown_name_before_loading_and_names_hashes_in_the_png(tiny_model_dir, lora_dir, tmp_path):
    from typer.testing import CliRunner

    from sdart.cli.app import app
    from sdart.images.infotext import parse_infotext, read_infotext

    runner = CliRunner()
    missing = runner.invoke(app, ["generate", "a fox <lora:nope>", "--model", str(tmp_path / "no-such-model"),
                                  "--lora-dir", str(lora_dir), "-o", str(tmp_path)])
    assert missing.exit_code == 2, missing.output  # the LoRA name is checked before any model is looked for
    assert "no LoRA named 'nope'" in missing.output and str(lora_dir) in missing.output.replace("\n", "")
    made = runner.invoke(app, ["generate", "a fox <lora:ink:0.5>", "--model", str(tiny_model_dir), "--steps", "2",
                               "--seed", "3", "--dtype", "float32", "--lora-dir", str(lora_dir), "-o",
                               str(tmp_path / "a")])
    assert made.exit_code == 0, made.output
    png = next((tmp_path / "a").glob("*.png"))
    params = parse_infotext(read_infotext(png)).params
    assert params["Lora hashes"] == f"ink: {LoraFolder(lora_dir).find('ink').short_hash}"
    # --from in a folder where the file was renamed: found by its hash, the same picture again.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "ink-v2.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())
    again = runner.invoke(app, ["generate", "--from", str(png), "--model", str(tiny_model_dir), "--dtype", "float32",
                                "--lora-dir", str(renamed), "-o", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    second = next((tmp_path / "b").glob("*.png"))
    assert np.array_equal(np.asarray(Image_open(second)), np.asarray(Image_open(png)))
    assert parse_infotext(read_infotext(second)).prompt == "a fox <lora:ink-v2:0.5>"


def Image_open(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_cli_from_a_picture_draws_without_a_lora_it_lacks_and_names_it(tiny_model_dir, lora_dir, tmp_path):
    from typer.testing import CliRunner

    from sdart.cli.app import app

    runner = CliRunner()
    made = runner.invoke(app, ["generate", "a fox <lora:ink>", "--model", str(tiny_model_dir), "--steps", "2",
                               "--dtype", "float32", "--lora-dir", str(lora_dir), "-o", str(tmp_path / "a")])
    assert made.exit_code == 0, made.output
    png = next((tmp_path / "a").glob("*.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    again = runner.invoke(app, ["generate", "--from", str(png), "--model", str(tiny_model_dir), "--dtype",
                                "float32", "--lora-dir", str(empty), "-o", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert "Failed to find networks: ink" in again.stderr


def test_server_refuses_unknown_names_natively_warns_on_sdapi_and_lists_the_folder(tag_engine, lora_dir, tmp_path):
    from fastapi.testclient import TestClient

    from sdart.server.app import create_app
    from sdart.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, device="cpu", dtype="float32", lora_dir=lora_dir), tag_engine)
    with TestClient(app) as client:
        refused = client.post("/api/v1/jobs", json={"prompt": "a fox <lora:nope>", "steps": 2})
        assert refused.status_code == 422, refused.text
        (detail,) = refused.json()["detail"]
        assert detail["loc"] == ["body", "prompt"] and "'nope'" in detail["msg"] and str(lora_dir) in detail["msg"]
        drawn = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox <lora:nope>", "steps": 2, "width": 64,
                                                       "height": 64})
        assert drawn.status_code == 200, drawn.text  # A1111 draws without it
        listing = client.get("/sdapi/v1/loras").json()
        assert sorted(entry["name"] for entry in listing) == ["ink", "trained", "watercolour"]
        assert {"name", "alias", "path", "metadata"} == set(listing[0])
        save_lora(build_tiny_pipeline("sd15"), lora_dir / "fresh.safetensors")
        try:
            assert client.post("/sdapi/v1/refresh-loras").status_code == 200
            assert "fresh" in [entry["name"] for entry in client.get("/sdapi/v1/loras").json()]
        finally:
            (lora_dir / "fresh.safetensors").unlink()
            tag_engine.lora_folder.refresh()
