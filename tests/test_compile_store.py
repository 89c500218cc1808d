"""The compiled-artifact store: keys, staleness, atomic saves, `sdart cache list/clear`, and the compile setting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdart.cli.app import app
from sdart.speed.artifacts import FORMAT, ArtifactKey, ArtifactStore, config_digest, default_cache_dir

UNET_INPUTS = ((2, 4, 64, 64), (), (2, 77, 768))


def key(**changes) -> ArtifactKey:
    fields = dict(component="unet", family="sd1", architecture="a" * 16, dtype="bfloat16", device="cpu avx2",
                  inputs=UNET_INPUTS, options=(("channels_last", True), ("fuse_qkv", True)))
    return ArtifactKey(**{**fields, **changes})


def saved(store: ArtifactStore, k: ArtifactKey, tmp_path: Path, build_s: float = 12.0, payload: bytes = b"so"):
    package = tmp_path / f"{k.digest}.pt2"
    package.write_bytes(payload)
    return store.save(k, package, build_s)


def test_every_key_field_changes_the_digest():
    base = key()
    changed = [key(component="vae-decoder"), key(family="sdxl"), key(architecture="b" * 16), key(dtype="float32"),
               key(device="cpu avx2 avx512f amx_bf16"), key(inputs=((4, 4, 64, 64), (), (4, 77, 768))),
               key(options=(("channels_last", False), ("fuse_qkv", True))),
               key(versions=(("diffusers", "0.42.1"), ("torch", "2.99.0"))), key(format=FORMAT + 1)]
    digests = {k.digest for k in changed}
    assert base.digest not in digests and len(digests) == len(changed)
    assert key().digest == base.digest  # and nothing else does: the same inputs give the same folder


def test_config_digest_ignores_private_keys_only():
    config = {"in_channels": 4, "sample_size": 64, "_name_or_path": "/some/folder", "_diffusers_version": "0.42.1"}
    moved = {**config, "_name_or_path": "/elsewhere"}
    assert config_digest(config) == config_digest(moved)
    assert config_digest(config) != config_digest({**config, "sample_size": 96})


def test_save_then_find_exactly_that_key(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    artifact = saved(store, key(), tmp_path)
    assert artifact.package.read_bytes() == b"so" and artifact.build_s == 12.0
    assert store.find(key()).folder == artifact.folder
    assert store.find(key(inputs=((4, 4, 64, 64), (), (4, 77, 768)))) is None
    assert not list(store.root.glob("*.partial-*"))


def test_an_artifact_of_another_torch_is_never_found_and_listed_stale(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    old = key(versions=(("diffusers", "0.42.1"), ("torch", "2.0.0")))
    saved(store, old, tmp_path)
    assert store.find(key()) is None  # the current torch's key names another folder
    (entry,) = store.entries()
    assert any("torch 2.0.0" in reason for reason in entry.stale_reasons())


def test_a_folder_whose_key_file_says_otherwise_is_refused(tmp_path, caplog):
    store = ArtifactStore(tmp_path / "cache")
    artifact = saved(store, key(), tmp_path)
    meta = json.loads((artifact.folder / "key.json").read_text())
    meta["key"]["dtype"] = "float32"  # copied by hand, or damaged
    (artifact.folder / "key.json").write_text(json.dumps(meta))
    assert store.find(key()) is None
    assert "does not hold what its name says" in caplog.text


def test_last_build_time_is_the_eta_of_the_next(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    saved(store, key(), tmp_path, build_s=80.0)
    saved(store, key(inputs=((4, 4, 64, 64), (), (4, 77, 768))), tmp_path, build_s=95.0)  # saved later
    assert store.last_build_s("unet", "cpu avx2") == 95.0
    assert store.last_build_s("vae-decoder", "cpu avx2") is None


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sdart"


def test_cache_list_and_clear_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("SDART_CACHE_DIR", str(tmp_path / "cache"))
    store = ArtifactStore(tmp_path / "cache")
    from sdart.cli.cache import _this_machine

    (device,) = _this_machine()
    current = saved(store, key(device=device), tmp_path, payload=b"x" * 2048)
    stale = saved(store, key(device=device, versions=(("diffusers", "0.42.1"), ("torch", "2.0.0"))), tmp_path)
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {Path(r["folder"]).name: r for r in json.loads(listed.stdout)}
    assert rows[current.folder.name]["stale"] == [] and rows[current.folder.name]["size_bytes"] == 2048
    assert rows[stale.folder.name]["stale"] and rows[stale.folder.name]["inputs"][0] == [2, 4, 64, 64]
    text = runner.invoke(app, ["cache", "list"]).stdout
    assert "current" in text and "stale: torch 2.0.0" in text
    cleared = runner.invoke(app, ["cache", "clear", "--stale"])
    assert cleared.exit_code == 0 and "removed 1 artifact" in cleared.stdout
    assert current.folder.is_dir() and not stale.folder.exists()
    assert runner.invoke(app, ["cache", "clear"]).exit_code == 0 and not any(store.entries())
    assert "no compiled artifacts" in runner.invoke(app, ["cache", "list"]).stdout


@pytest.mark.parametrize(("given", "mode"), [(True, "always"), (False, "never"), ("1", "always"), ("0", "never"),
                                             ("auto", "auto"), ("Always", "always")])
def test_compile_setting_keeps_the_old_switch(given, mode):
    from sdart.settings import Settings

    assert Settings(compile=given).compile == mode


def test_compile_setting_defaults_to_auto_and_reads_the_environment(monkeypatch):
    from sdart.settings import load_settings

    assert load_settings().compile == "auto"
    monkeypatch.setenv("SDART_COMPILE", "1")  # how --compile was switched on before the three modes
    assert load_settings().compile == "always"
    monkeypatch.setenv("SDART_CACHE_DIR", "/somewhere/else")
    assert load_settings().cache_dir == Path("/somewhere/else")


@pytest.mark.parametrize(("args", "mode"), [(["--compile"], "always"), (["--compile", "never"], "never"),
                                            (["--compile", "auto", "--step-cache", "3"], "auto"),
                                            (["--compile", "--step-cache", "3"], "always"), (["--no-compile"], "never"),
                                            ([], "auto")])
def test_compile_option_alone_means_always(monkeypatch, args, mode):
    import sdart.server.ray as ray_runner

    calls = []
    monkeypatch.setattr(ray_runner, "serve_on_ray", lambda settings, scale, address, on_ready: calls.append(settings))
    result = CliRunner().invoke(app, ["serve", "--ray", "local", *args])
    assert result.exit_code == 0, result.output
    assert calls[0].compile == mode


def test_a_bad_compile_mode_is_named():
    result = CliRunner().invoke(app, ["serve", "--ray", "local", "--compile", "sometimes"])
    assert result.exit_code == 2 and "compile" in result.stderr and "sometimes" in result.stderr


@pytest.mark.parametrize("text", ["512", "512x", "500x512", "32x32", "axb"])
def test_compile_size_is_checked(text):
    result = CliRunner().invoke(app, ["compile", "builtin:shapes", "--size", text])
    assert result.exit_code == 2 and "--size" in result.stderr and repr(text) in result.stderr


def test_clear_leaves_a_build_in_progress_and_removes_one_whose_process_is_gone(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    store.root.mkdir(parents=True)
    live = store.root / f"unet-abc.partial-{os.getpid()}"  # this process: a build still running
    dead = store.root / "unet-def.partial-999999999"  # no such process: an interrupted build's leftover
    temporary = store.root / f"unet-abc.{os.getpid()}.pt2"  # a running build's file beside its folder
    dead_temporary = store.root / "unet-def.999999999.pt2"  # the file an interrupted build was writing
    stray = store.root / "notes.txt"  # not the store's: left alone
    for folder in (live, dead):
        folder.mkdir()
    for file in (temporary, dead_temporary, stray):
        file.write_bytes(b"x")
    assert sorted(store.clear()) == sorted([dead, dead_temporary])
    assert live.is_dir() and temporary.is_file() and stray.is_file()
    assert not dead.exists() and not dead_temporary.exists()
