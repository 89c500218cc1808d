"""Shared fixtures: tiny models built once per session, and an isolated user environment per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may touch the network: the hub is only ever read from (empty) caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def isolated_user_env(tmp_path_factory, monkeypatch):
    """Each test gets its own HOME, HF cache, sdart cache and working directory, and no SDART_* settings."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for key in list(os.environ):
        if key.startswith("SDART_"):
            monkeypatch.delenv(key)
    workdir = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny SD 1.x-shaped model saved in diffusers layout (native size: see sdart.testing)."""
    from sdart.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd15", kind="sd15")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    from sdart.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sdxl", kind="sdxl")


@pytest.fixture(scope="session")
def tiny_single_file(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny SD 1.x model as one LDM-layout .safetensors checkpoint (configs: tiny_model_dir)."""
    from sdart.testing import save_single_file

    return save_single_file(tiny_model_dir, tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """One Engine on the tiny model in float32 on the CPU, shared by tests that only generate."""
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32"))
