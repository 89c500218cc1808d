"""The benchmark's quick mode (what CI runs): every configuration's code path on the tiny model, and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.mark.slow
def test_quick_benchmark_writes_results_report_and_chart(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(tmp_path),
                           "--only", "original,default,step_cache,token_downsampling,int8,lcm,taesd,fastest"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results-quick.json").read_text())
    configs = [row["config"] for row in results["rows"]]
    assert configs[0].startswith("original") and len(configs) == 8
    for row in results["rows"]:
        assert row["per_image_s"] > 0 and row["step_s"] > 0 and row["peak_rss_gib"] > 0
    by_name = {row["config"]: row for row in results["rows"]}
    cache = next(row for name, row in by_name.items() if "step cache" in name)
    assert cache["step_cache_calls"]["cached"] > 0 and "pixel_diff_vs_default" in cache
    downsampled = next(row for name, row in by_name.items() if "token downsampling" in name)
    assert downsampled["settings"]["token_downsampling"] == 2 and "pixel_diff_vs_default" in downsampled
    taesd = next(row for name, row in by_name.items() if name.startswith("sdart default + TAESD"))
    assert taesd["settings"]["vae"].endswith("tiny-taesd") and taesd["fixed_s"] > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| configuration |" in report and "- cpu:" in report
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
