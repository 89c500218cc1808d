"""Model references, loading through the real diffusers code, and classified loading errors."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sdart.models import load as models
from sdart.models.errors import ModelLoadError
from sdart.models.load import load
from sdart.models.resolve import resolve


def test_resolve_kinds(tiny_model_dir, tiny_single_file):
    assert resolve(str(tiny_model_dir)).source == "folder"
    spec = resolve(str(tiny_single_file), config_dir=tiny_model_dir)
    assert (spec.source, spec.name, spec.config_dir) == ("single_file", "tiny-sd15", tiny_model_dir)
    assert resolve("CompVis/stable-diffusion-v1-4").source == "hub"


@pytest.mark.parametrize("reference, kind, phrase", [
    ("", "invalid", "give a hub id"),
    ("builtin:nope", "not_found", "no such built-in model"),
    ("./missing-folder", "missing_file", "no such file or folder"),
    ("models/v1-5.safetensors", "missing_file", "no such file or folder"),
    ("not a hub id", "missing_file", "not a hub id"),
])
def test_references_that_cannot_be_models(reference, kind, phrase):
    with pytest.raises(ModelLoadError) as caught:
        resolve(reference)
    assert caught.value.kind == kind and phrase in str(caught.value)
    assert repr(reference) in str(caught.value)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="no model_index.json") as caught:
        resolve(str(tmp_path))
    assert caught.value.kind == "not_a_model"


def test_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a checkpoint file"):
        resolve(str(tmp_path / "model.txt"))


def test_offline_and_not_cached_is_explained_by_the_real_hub_client():
    """HF_HUB_OFFLINE=1 (conftest) and an empty HF cache: huggingface_hub raises, we explain."""
    with pytest.raises(ModelLoadError) as caught:
        load(resolve("CompVis/stable-diffusion-v1-4"), torch.float32)
    assert caught.value.kind == "offline"
    message = str(caught.value)
    assert "'CompVis/stable-diffusion-v1-4' is not in the local cache" in message and "HF_HUB_OFFLINE" in message
    assert "--model PATH" in message


def _hub_error(cls, message="boom"):
    return cls(message, response=SimpleNamespace(headers={}, request=None))


@pytest.mark.parametrize("error, kind, phrase", [
    ("gated", "gated", "https://huggingface.co/org/gated"),
    ("not_found", "not_found", "was not found on the Hugging Face hub"),
    ("moved", "not_found", "use --model stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ("connection", "offline", "the hub could not be reached"),
])
def test_hub_errors_wrapped_by_diffusers_are_classified(monkeypatch, error, kind, phrase):
    from diffusers import AutoPipelineForText2Image
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    causes = {
        "gated": _hub_error(GatedRepoError, "403 Client Error: access to model org/gated is restricted"),
        "not_found": _hub_error(RepositoryNotFoundError),
        "moved": _hub_error(RepositoryNotFoundError),
        "connection": ConnectionError("Failed to resolve 'huggingface.co'"),
    }
    reference = {"gated": "org/gated", "moved": "runwayml/stable-diffusion-v1-5"}.get(error, "org/missing")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def fake_from_pretrained(*args, **kwargs):
        # diffusers' own wrapping: a plain OSError whose __cause__ is the hub's exception
        raise OSError(f"Cannot load model {reference}") from causes[error]

    monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", fake_from_pretrained)
    with pytest.raises(ModelLoadError) as caught:
        load(resolve(reference), torch.float32)
    assert caught.value.kind == kind and phrase in str(caught.value)
    if kind == "gated":
        assert "HF_TOKEN" in str(caught.value) and "hf auth login" in str(caught.value)


def test_truncated_weights_in_a_folder_are_reported_corrupt(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError) as caught:
        load(resolve(str(broken)), torch.float32)
    assert caught.value.kind == "corrupt" and "corrupt or incomplete" in str(caught.value)


def test_truncated_single_file_is_reported_corrupt(tiny_single_file, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_single_file.read_bytes()[:5000])
    with pytest.raises(ModelLoadError) as caught:
        load(resolve(str(broken), config_dir=tiny_model_dir), torch.float32)
    assert caught.value.kind == "corrupt"


def test_single_file_offline_without_configs_is_explained(tiny_single_file):
    with pytest.raises(ModelLoadError) as caught:
        load(resolve(str(tiny_single_file)), torch.float32)
    assert caught.value.kind == "offline" and "--model-config DIR" in str(caught.value)


def test_single_file_gives_the_same_pixels_as_the_folder(tiny_model_dir, tiny_single_file):
    from sdart.engine import Engine
    from sdart.settings import Settings

    settings = Settings(device="cpu", dtype="float32", model_config_dir=tiny_model_dir)
    folder = Engine(str(tiny_model_dir), settings=settings)
    single = Engine(str(tiny_single_file), settings=settings)
    assert single.model.spec.source == "single_file" and single.model.family == "sd1"
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = (getattr(e.model.pipeline, name).state_dict() for e in (folder, single))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a = folder.generate(prompt="a fox", steps=2, seed=3, progress=False).images[0]
    b = single.generate(prompt="a fox", steps=2, seed=3, progress=False).images[0]
    # Same weights; a memory-mapped folder and a copied checkpoint can differ in alignment, which may change
    # a CPU matmul's rounding by ~1e-6: at most one level in a few pixels.
    assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 1
    # A1111 hashes checkpoints as sha256(file)[:10]
    import hashlib

    assert single.model.hash == hashlib.sha256(tiny_single_file.read_bytes()).hexdigest()[:10]


def test_sdxl_folder_loads_the_xl_pipeline(tiny_sdxl_dir):
    loaded = load(resolve(str(tiny_sdxl_dir)), torch.float32)
    assert type(loaded.pipeline).__name__ == "StableDiffusionXLPipeline" and loaded.family == "sdxl"


def test_hash_cache_is_reused(tiny_single_file, monkeypatch):
    first = models.file_sha256(tiny_single_file)
    monkeypatch.setattr(models.hashlib, "sha256", lambda: (_ for _ in ()).throw(AssertionError("rehashed")))
    assert models.file_sha256(tiny_single_file) == first


def test_sdxl_single_file_is_recognised_and_loads(tiny_sdxl_dir, tmp_path):
    from sdart.testing import save_single_file

    checkpoint = save_single_file(tiny_sdxl_dir, tmp_path / "tiny-xl.safetensors")
    assert models._single_file_is_sdxl(checkpoint)
    loaded = load(resolve(str(checkpoint), config_dir=tiny_sdxl_dir), torch.float32)
    assert type(loaded.pipeline).__name__ == "StableDiffusionXLPipeline" and loaded.family == "sdxl"
