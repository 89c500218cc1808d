"""The `sdart` command end to end on the tiny model: PNGs with parameters, --from, --json, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdart.cli.app import app
from sdart.images.infotext import parse_infotext, read_infotext

runner = CliRunner()


def sdart(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny(tiny_model_dir):
    return ["--model", tiny_model_dir, "--device", "cpu", "--dtype", "float32", "--steps", "2"]


def test_generate_writes_pngs_with_a1111_parameters(tiny, tmp_path):
    result = sdart("generate", "a watercolor fox, in the snow: dusk", *tiny, "--seed", 42, "-n", 2,
                   "--negative", "blurry", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    paths = [image["path"] for image in report["images"]]
    assert [os.path.basename(p) for p in paths] == ["00001-42.png", "00002-43.png"]
    parsed = parse_infotext(read_infotext(paths[1]))
    assert parsed.prompt == "a watercolor fox, in the snow: dusk" and parsed.negative_prompt == "blurry"
    assert parsed.params["Seed"] == "43" and parsed.params["Sampler"] == "DPM++ 2M"
    assert parsed.params["Schedule type"] == "Karras"  # what Automatic is for DPM++ 2M, written as A1111 writes it
    assert report["timings"]["per_image_s"] > 0 and report["cancelled"] is False


def test_default_output_folder_and_plain_output(tiny):
    result = sdart("generate", "a fox", *tiny, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == os.path.join("outputs", "00001-1.png")
    assert os.path.isfile("outputs/00001-1.png")


def test_from_reproduces_identical_pixels_and_accepts_overrides(tiny, tmp_path):
    assert sdart("generate", "a fox", *tiny, "--seed", 5, "--sampler", "Euler a", "-o", tmp_path).exit_code == 0
    original = tmp_path / "00001-5.png"
    again = sdart("generate", "--from", original, "--model", tiny[1], "--device", "cpu", "--dtype", "float32",
                  "-o", tmp_path)
    assert again.exit_code == 0, again.output
    copy = tmp_path / "00002-5.png"
    assert np.array_equal(np.asarray(Image.open(original)), np.asarray(Image.open(copy)))
    assert read_infotext(copy) == read_infotext(original)
    changed = sdart("generate", "--from", original, *tiny, "--seed", 6, "-o", tmp_path)
    assert changed.exit_code == 0 and parse_infotext(read_infotext(tmp_path / "00003-6.png")).params["Sampler"] == "Euler a"


def test_info_prints_and_parses(tiny, tmp_path):
    sdart("generate", "a fox, 🦊", *tiny, "--seed", 9, "-o", tmp_path)
    plain = sdart("info", tmp_path / "00001-9.png")
    assert plain.exit_code == 0 and plain.stdout.startswith("a fox, 🦊\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras")
    data = json.loads(sdart("info", tmp_path / "00001-9.png", "--json").stdout)
    assert data["request"]["seed"] == 9 and data["prompt"] == "a fox, 🦊"


BAD = [
    (["--width", 100], "width = 100: must be a multiple of 8"),
    (["--steps", 0], "steps = 0"),
    (["--steps", 100000], "steps = 100000"),
    (["--cfg", "nan"], "cfg_scale = nan"),
    (["--sampler", "Euler b"], "valid names: DPM++ 2M"),
    (["--seed", -5], "seed = -5"),
    (["-n", 0], "n_iter = 0"),
    (["--batch-size", 1000], "batch_size = 1000"),
    (["--scheduler", "Karras", "--sampler", "PLMS"], "fixed timestep grid"),
    (["--dtype", "float8"], "dtype = 'float8'"),
    (["--token-downsampling", 9], "token_downsampling = 9"),
    (["--step-cache", 1], "step cache interval = 1"),
    (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "toaster"], "device = "),
]


@pytest.mark.parametrize("extra, phrase", BAD, ids=[" ".join(map(str, b[0])) for b in BAD])
def test_bad_options_exit_2_with_the_field_and_write_nothing(tiny, tmp_path, extra, phrase):
    out = tmp_path / "out"
    result = sdart("generate", "a fox", *tiny, "-o", out, *extra)
    assert result.exit_code == 2, result.output
    assert phrase in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_missing_prompt(tiny):
    result = sdart("generate", *tiny)
    assert result.exit_code == 2 and "prompt: missing" in result.stderr


@pytest.mark.parametrize("model, phrase", [
    ("missing.safetensors", "no such file or folder"),
    ("CompVis/stable-diffusion-v1-4", "is not in the local cache"),
])
def test_model_errors_exit_1_with_one_paragraph(tmp_path, model, phrase):
    result = sdart("generate", "a fox", "--model", model, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1
    assert phrase in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert not any((tmp_path / "out").iterdir())


def test_directory_that_is_not_a_model(tmp_path):
    result = sdart("generate", "a fox", "--model", tmp_path, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1 and "no model_index.json" in " ".join(result.stderr.split())


def test_unwritable_output_dir_fails_before_loading(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = sdart("generate", "a fox", *tiny, "-o", blocker / "sub")
    assert result.exit_code == 2 and "output_dir" in result.stderr and "not writable" in result.stderr


def test_from_requires_an_image_with_parameters(tiny, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    result = sdart("generate", "--from", plain, *tiny)
    assert result.exit_code == 2 and "carries no `parameters` text" in result.stderr
    assert sdart("generate", "--from", tmp_path / "nope.png", *tiny).exit_code == 2
    assert sdart("info", plain).exit_code == 1


def test_help_lists_commands_and_main_options():
    result = sdart("--help")
    for command in ("generate", "info", "samplers", "models"):
        assert command in result.stdout
    options = sdart("generate", "--help").stdout
    for option in ("--steps", "--cfg", "--seed", "--sampler", "--model", "--from", "--memory", "--json"):
        assert option in options
    listing = sdart("samplers").stdout
    assert "DPM++ 3M SDE" in listing and "runs as Heun" in listing and "Align Your Steps (align_your_steps)" in listing
    # rich markup must not swallow bracketed defaults
    flat = " ".join(options.split())
    assert "[default: 25]" in flat and "[default: outputs]" in flat


def test_ctrl_c_keeps_finished_images_and_exits_130(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sdart.cli", "generate", "a fox", "--model", str(tiny_model_dir), "--device", "cpu",
           "--dtype", "float32", "--steps", "30", "-n", "200", "--seed", "1", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(out.glob("*.png"))):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    saved = sorted(out.glob("*.png"))
    assert 1 <= len(saved) < 200 and "cancelled" in stderr
    for path in saved:  # every file that exists is complete and carries its parameters
        assert parse_infotext(read_infotext(path)).params["Steps"] == "30"
    assert not list(out.glob(".sdart-*"))  # no temporary file left behind
