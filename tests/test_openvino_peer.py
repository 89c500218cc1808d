"""The benchmark's optional OpenVINO peer (benchmarks/openvino_peer.py) is not a dependency: without it, the peer
fails at once naming its install command. Needs no openvino (that the converted UNet computes torch's output is
checked by `python benchmarks/unet_ab.py --quick --only fp32,openvino`: a conversion takes over 10 s here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PEER = Path(__file__).resolve().parents[1] / "benchmarks" / "openvino_peer.py"


def test_missing_openvino_names_its_install_command(tmp_path):
    # A child process: the benchmark's sys.path changes stay out of this one.
    env = {**os.environ, "SDART_BENCH_OPENVINO": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, str(PEER), "--folder", str(tmp_path / "no-model")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert f"pip install --no-deps --target {tmp_path / 'absent'} openvino==" in proc.stderr
