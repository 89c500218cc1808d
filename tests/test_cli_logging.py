"""Logging is set up once, in the CLI layer: sdart's own warnings reach the terminal once each; the libraries'
notes (the hub's retry warnings) only with --debug, and then once each."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
from sdart.cli.common import configure_logging
configure_logging(debug=sys.argv[1] == "debug")
configure_logging(debug=sys.argv[1] == "debug")  # a second set-up must not stack handlers
# What huggingface_hub's HTTP backoff logs before each of its five retries (utils/_http.py).
logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
logging.getLogger("sdart.models.load").warning("sdart's own warning")
logging.getLogger("sdart.models.load").info("sdart's own note")
"""


def run(mode: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_without_debug_the_hub_retries_are_silent_and_sdart_warns_once():
    lines = run("quiet")
    assert not [line for line in lines if "Retrying" in line], lines
    assert [line for line in lines if "sdart's own warning" in line] == ["WARNING sdart.models.load: sdart's own warning"]
    assert not [line for line in lines if "sdart's own note" in line]


@pytest.mark.parametrize("text", ["Retrying in 1s [Retry 1/5].", "sdart's own warning", "sdart's own note"])
def test_with_debug_each_line_appears_once(text):
    lines = run("debug")
    assert len([line for line in lines if text in line]) == 1, lines
