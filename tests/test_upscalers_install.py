"""scripts/install.sh takes the torchvision built for the torch it installs (spandrel needs one), and removes a
torchvision that does not load beside it. Run with a stand-in interpreter that records what it is asked to do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Answers like a Python whose torch is TORCH_LABEL's build and whose torchvision import exits VISION_IMPORT.
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
    *"import sdart"*) echo "sdart with torch" ;;
    *"import torch;"*) echo "$TORCH_LABEL" ;;
    *"import torchvision"*) exit "$VISION_IMPORT" ;;
esac
exit 0
"""


def install(tmp_path: Path, *args: str, **env: str) -> list[str]:
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    calls = tmp_path / "calls.txt"
    run = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": str(python), "CALLS": str(calls), "TORCH_LABEL": "cpu",
                              "VISION_IMPORT": "0", **env})
    assert run.returncode == 0, run.stderr
    return [line.replace(str(python), "python") for line in calls.read_text().splitlines()]


def pip_installs(calls: list[str]) -> list[str]:
    return [c.removeprefix("-m pip install --disable-pip-version-check ") for c in calls if " pip install " in f" {c}"]


def test_a_cpu_torch_gets_the_cpu_torchvision_by_its_label(tmp_path):
    installs = pip_installs(install(tmp_path, "--torch-only"))
    assert installs == ["torch==2.13.0",
                        f"--no-deps --index-url {CPU_INDEX} --timeout 20 --retries 1 torchvision==0.28.0+cpu"]


@pytest.mark.parametrize(("env", "expected"), [
    ({"SDART_TORCH": "cu128"}, "--index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 torchvision==0.28.0"),
    ({"SDART_TORCH_INDEX_URL": CPU_INDEX, "SDART_TORCH_VERSION": "2.9.1"},
     f"--index-url {CPU_INDEX} torch==2.9.1 torchvision==0.24.1"),
])
def test_torch_and_torchvision_come_from_the_same_index(tmp_path, env, expected):
    assert pip_installs(install(tmp_path, "--torch-only", **env)) == [expected]


def test_pypis_torch_gets_pypis_torchvision(tmp_path):
    installs = pip_installs(install(tmp_path, "--torch-only", TORCH_LABEL="", SDART_TORCH_VERSION="2.14.1"))
    assert installs == ["torch==2.14.1", "torchvision==0.29.1"]


def test_a_torchvision_that_does_not_load_is_removed(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "fine").mkdir()
    broken = install(tmp_path / "broken", "--editable", "test", VISION_IMPORT="1")
    assert "-m pip install --disable-pip-version-check torch==2.13.0 -e " + f"{ROOT}[test]" in broken
    assert broken.index("-c import torchvision") > broken.index("-m pip install --disable-pip-version-check "
                                                                f"torch==2.13.0 -e {ROOT}[test]")
    assert "-m pip uninstall --disable-pip-version-check -y -q torchvision" in broken
    assert not [call for call in install(tmp_path / "fine", "--editable") if "uninstall" in call]
