"""The streaming UNet loader (sdart.streaming): same weights as diffusers' loader, int8 on the way in, and a clean
fallback to diffusers when a file doesn't fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sdart.models.load import WeightLayout, load
from sdart.models.resolve import resolve
from sdart.models.streaming import StreamLoadError, iter_tensors, load_model
from sdart.speed.quant import Int8Conv2d, Int8Linear


def _unet_file(folder, variant=None):
    return folder / "unet" / f"diffusion_pytorch_model{'.' + variant if variant else ''}.safetensors"


@pytest.fixture(scope="module")
def fp16_variant_dir(tmp_path_factory):
    """The tiny model saved as SD's hub repos ship it: fp16 weights under the `fp16` variant name."""
    from sdart.testing import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("variant") / "tiny-fp16"
    build_tiny_pipeline("sd15").to(torch.float16).save_pretrained(folder, variant="fp16")
    return folder


def test_tensors_are_read_as_safetensors_reads_them(tiny_model_dir):
    from safetensors.torch import load_file

    path = _unet_file(tiny_model_dir)
    reference = load_file(path)
    streamed = dict(iter_tensors(path))
    assert streamed.keys() == reference.keys()
    assert all(streamed[k].dtype == reference[k].dtype and torch.equal(streamed[k], reference[k]) for k in reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_unet_equals_the_diffusers_load(fp16_variant_dir, dtype):
    from diffusers import UNet2DConditionModel

    path = _unet_file(fp16_variant_dir, "fp16")
    ours = load_model(UNet2DConditionModel, path.parent, path, dtype)
    theirs = UNet2DConditionModel.from_pretrained(fp16_variant_dir / "unet", variant="fp16", dtype=dtype)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].dtype == dtype and torch.equal(a[k], b[k]) for k in a)
    assert not ours.training


def test_int8_while_streaming_gives_close_outputs(tiny_model_dir):
    from diffusers import UNet2DConditionModel

    path = _unet_file(tiny_model_dir)
    full = load_model(UNet2DConditionModel, path.parent, path, torch.float32)
    int8 = load_model(UNet2DConditionModel, path.parent, path, torch.float32, int8=True)
    quantized = [m for m in int8.modules() if isinstance(m, (Int8Linear, Int8Conv2d))]
    assert len(quantized) > 10 and all(not m.qweight.is_meta and m.qweight.dtype == torch.int8 for m in quantized)
    assert all(m.bias is None or not m.bias.is_meta for m in quantized)  # biases read after the swap landed
    weight_bytes = sum(b.numel() * b.element_size() for b in int8.state_dict().values())
    full_bytes = sum(b.numel() * b.element_size() for b in full.state_dict().values())
    assert weight_bytes < 0.4 * full_bytes
    config = full.config
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, config.in_channels, config.sample_size, config.sample_size, generator=g)
    context = torch.randn(1, 77, config.cross_attention_dim, generator=g)
    with torch.no_grad():
        expected = full(sample, 500, context).sample
        got = int8(sample, 500, context).sample
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_a_file_that_does_not_fit_the_config_is_refused(tiny_model_dir, tiny_sdxl_dir):
    from diffusers import UNet2DConditionModel

    with pytest.raises(StreamLoadError, match="is not part of UNet2DConditionModel"):
        load_model(UNet2DConditionModel, tiny_model_dir / "unet", _unet_file(tiny_sdxl_dir), torch.float32)


def test_a_truncated_file_is_refused(tiny_model_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    broken = tmp_path / "unet.safetensors"
    data = _unet_file(tiny_model_dir).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(StreamLoadError, match="truncated"):
        load_model(UNet2DConditionModel, tiny_model_dir / "unet", broken, torch.float32)
    broken.write_bytes(data[:12])
    with pytest.raises(StreamLoadError, match="no readable safetensors header"):
        load_model(UNet2DConditionModel, tiny_model_dir / "unet", broken, torch.float32)


def test_pipeline_loading_streams_the_unet_and_falls_back_when_it_cannot(tiny_model_dir, tmp_path, monkeypatch):
    import sdart.models.streaming

    calls = []
    real = sdart.models.streaming.load_model

    def counting(*args, **kwargs):
        calls.append(args[2].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(sdart.models.streaming, "load_model", counting)
    loaded = load(resolve(str(tiny_model_dir)), torch.float32, layout=WeightLayout(int8=True, channels_last=True))
    assert calls == ["diffusion_pytorch_model.safetensors"] * 2  # UNet and VAE
    conv = loaded.pipeline.vae.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert any(isinstance(m, Int8Conv2d) for m in loaded.pipeline.unet.modules())
    assert any(isinstance(m, Int8Conv2d) for m in loaded.pipeline.vae.modules())
    # The text encoder was quantized as it loaded (before the UNet), so no full-precision Linear is left in it.
    encoder_layers = list(loaded.pipeline.text_encoder.modules())
    assert any(isinstance(m, Int8Linear) for m in encoder_layers)
    assert not any(type(m) is torch.nn.Linear for m in encoder_layers)

    # A UNet file with an extra tensor: the streaming loader refuses it and diffusers loads the model.
    from safetensors.torch import load_file, save_file

    odd = shutil.copytree(tiny_model_dir, tmp_path / "odd")
    tensors = load_file(_unet_file(odd))
    save_file({**tensors, "extra.weight": torch.zeros(2)}, _unet_file(odd))
    loaded = load(resolve(str(odd)), torch.float32)
    assert not any(t.is_meta for t in loaded.pipeline.unet.parameters())


def test_a_cached_hub_model_streams_from_its_snapshot_offline(tiny_model_dir, monkeypatch):
    """A hub id whose files are in the HF cache (as a finished download leaves them): offline, diffusers loads the
    pipeline from the snapshot and the UNet and VAE are streamed from the same files."""
    from huggingface_hub import constants

    import sdart.models.streaming

    cache = Path(constants.HF_HUB_CACHE) / "models--sdart-test--tiny"  # fixed when huggingface_hub was imported
    commit = "0" * 40
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(tiny_model_dir, cache / "snapshots" / commit)
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    streamed = []
    real = sdart.models.streaming.load_model
    monkeypatch.setattr(sdart.models.streaming, "load_model",
                        lambda cls, config_dir, weights, *a, **kw: streamed.append(weights) or real(cls, config_dir,
                                                                                                    weights, *a, **kw))
    try:
        loaded = load(resolve("sdart-test/tiny"), torch.float32, layout=WeightLayout(int8=True))
    finally:
        shutil.rmtree(cache)  # the cache may be the user's own: leave nothing behind
    assert loaded.spec.source == "hub"
    assert [w.parent.name for w in streamed] == ["unet", "vae"]
    assert all(commit in str(w) for w in streamed)
    assert any(isinstance(m, Int8Linear) for m in loaded.pipeline.text_encoder.modules())  # loaded offline too


def test_sdxl_int8_load_quantizes_both_text_encoders(tiny_sdxl_dir):
    loaded = load(resolve(str(tiny_sdxl_dir)), torch.float32, layout=WeightLayout(int8=True))
    for name in ("text_encoder", "text_encoder_2"):
        layers = list(getattr(loaded.pipeline, name).modules())
        assert any(isinstance(m, Int8Linear) for m in layers), name
        assert not any(type(m) is torch.nn.Linear for m in layers), name


def test_weights_read_ahead_build_the_same_pipeline(fp16_variant_dir, monkeypatch):
    """prefetch_weights reads the UNet's and VAE's files in its thread (the variant load() tries first), and load()
    builds them from what it read: the same tensors as reading them itself."""
    import sdart.models.prefetch
    import sdart.models.streaming
    from sdart.models.load import prefetch_weights

    spec, layout = resolve(str(fp16_variant_dir)), WeightLayout(channels_last=True)
    plain = load(spec, torch.bfloat16, layout=layout).pipeline
    read_here, read_ahead = [], []
    for module, calls in ((sdart.models.streaming, read_here), (sdart.models.prefetch, read_ahead)):
        real = module.converted_tensors
        monkeypatch.setattr(module, "converted_tensors",
                            lambda path, *a, real=real, calls=calls, **kw: calls.append(path) or real(path, *a, **kw))
    prefetch = prefetch_weights(spec, torch.bfloat16, layout)
    try:
        ahead = load(spec, torch.bfloat16, layout=layout, prefetch=prefetch).pipeline
    finally:
        prefetch.close()
    assert [(p.parent.name, p.name) for p in read_ahead] == [
        ("unet", "diffusion_pytorch_model.fp16.safetensors"), ("vae", "diffusion_pytorch_model.fp16.safetensors")]
    assert read_here == []
    for name in ("unet", "vae"):
        a, b = getattr(plain, name).state_dict(), getattr(ahead, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].stride() == b[k].stride() for k in a)


def test_a_read_error_ahead_reaches_the_reader(tiny_model_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    from sdart.models.prefetch import WeightPrefetch

    broken = tmp_path / "unet.safetensors"
    data = _unet_file(tiny_model_dir).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    prefetch = WeightPrefetch([broken], torch.float32, channels_last=False)
    try:
        with pytest.raises(StreamLoadError, match="truncated"):
            load_model(UNet2DConditionModel, tiny_model_dir / "unet", broken, torch.float32,
                       tensors=prefetch.tensors(broken))
        assert prefetch.tensors(broken) is None  # each file is handed out once
    finally:
        prefetch.close()


def test_no_read_ahead_for_int8_or_a_replaced_vae(tiny_model_dir):
    from sdart.models.load import prefetch_weights

    spec = resolve(str(tiny_model_dir))
    assert prefetch_weights(spec, torch.float32, WeightLayout(int8=True)) is None  # quantized as it arrives
    prefetch = prefetch_weights(spec, torch.float32, WeightLayout(), replaced_vae=True)
    try:
        assert prefetch.tensors(tiny_model_dir / "vae" / "diffusion_pytorch_model.safetensors") is None
        assert prefetch.tensors(_unet_file(tiny_model_dir)) is not None
    finally:
        prefetch.close()


def test_the_read_ahead_thread_leaves_torch_threads_alone(tiny_model_dir, monkeypatch):
    """The read-ahead converts on one OpenMP thread of its own; the loading thread and threads started later keep
    torch's thread count (torch.set_num_threads would have changed the process-wide default)."""
    import threading

    import sdart.models.prefetch
    from sdart.models.load import prefetch_weights

    before = torch.get_num_threads()
    converting_with = []
    real = sdart.models.prefetch.converted_tensors
    monkeypatch.setattr(sdart.models.prefetch, "converted_tensors",
                        lambda *a, **kw: converting_with.append(torch.get_num_threads()) or real(*a, **kw))
    prefetch = prefetch_weights(resolve(str(tiny_model_dir)), torch.float32, WeightLayout())
    prefetch.close()
    if sdart.models.prefetch._loaded_libgomp() is not None:  # torch on Linux: its OpenMP runtime is libgomp
        assert converting_with and set(converting_with) == {1}
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and later == [before]
