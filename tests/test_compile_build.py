"""A real build: `sdart compile` on the tiny model (torch.export + AOTInductor, a C++ compile of the generated
code: minutes on 2 busy cores, hence slow), then a run that loads the artifacts, against eager."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sdart.cli.app import app


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compile_then_generate_loads_the_artifacts_with_the_same_pixels(tiny_model_dir, tmp_path, monkeypatch):
    from sdart.engine import Engine
    from sdart.settings import Settings

    monkeypatch.setenv("SDART_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    built = runner.invoke(app, ["compile", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"])
    assert built.exit_code == 0, built.output
    assert "compiled unet 2×4×8×8 float32" in built.stdout and "compiled vae-decoder 1×4×8×8 float32" in built.stdout
    # Quiet: torch's notes went to the build log, not to the terminal.
    assert "Warning" not in built.stderr and "torch" not in built.stderr
    (log,) = (tmp_path / "cache" / "logs").glob("build-*.log")
    assert "exported unet" in log.read_text()
    listed = json.loads(runner.invoke(app, ["cache", "list", "--json"]).stdout)
    assert sorted(row["component"] for row in listed) == ["unet", "vae-decoder"]
    assert all(row["stale"] == [] and row["build_s"] > 0 for row in listed)

    again = runner.invoke(app, ["compile", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"])
    assert again.exit_code == 0 and "nothing to build" in again.stderr

    images = {}
    for mode in ("never", "auto"):
        engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", compile=mode,
                                                                cache_dir=tmp_path / "cache"))
        result = engine.generate(prompt="a red circle", steps=3, seed=7, progress=False)
        images[mode] = np.asarray(result.images[0], dtype=np.int16)
    status = engine.compiled.status()["components"]
    assert status["unet"]["compiled_calls"] == 3 and status["unet"]["eager_calls"] == 0
    assert status["vae-decoder"]["compiled_calls"] == 1
    # Same pixels up to rounding: fp32 kernels that sum in another order (measured: at most 1 level of 255).
    assert np.abs(images["never"] - images["auto"]).max() <= 2
