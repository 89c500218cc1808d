"""Batch runner: prompt files → tasks, manifest and resume, and `sdart batch` end to end on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdart.batch.manifest import BatchDir, BatchDirBusy, read_manifest, verify_png
from sdart.batch.plan import MANIFEST, Task, parse_seeds, plan_batch
from sdart.batch.run import generate_task, run_batch
from sdart.cli.app import app
from sdart.images.infotext import parse_infotext, read_infotext
from sdart.request import RequestError

MODEL = "org/some-model"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- planning (no model) -------------------------------------------------------------------------------------


def test_parse_seeds_ranges_and_lists():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds(" 5 ") == [5]
    assert parse_seeds([4, 2]) == [4, 2]
    for bad in ("3-1", "a-b", "", "1-"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_plan_reads_txt_jsonl_csv_with_sources_and_line_overrides(tmp_path):
    txt = write(tmp_path / "p.txt", "# a comment\na red fox\n\na blue owl\n")
    jsonl = write(tmp_path / "p.jsonl", '{"prompt": "a cat", "steps": 9, "seed": 7}\n"a bare string prompt"\n')
    csv_file = write(tmp_path / "p.csv", 'prompt,steps,cfg_scale\n"a dog, running",3,\n')

    plan = plan_batch([txt, jsonl, csv_file], {"steps": 2, "cfg_scale": 5.0}, model=MODEL)

    assert plan.errors == []
    got = [(t.source, t.request.prompt, t.request.steps, t.request.cfg_scale) for t in plan.tasks]
    assert got == [
        ("p.txt:2", "a red fox", 2, 5.0),
        ("p.txt:4", "a blue owl", 2, 5.0),
        ("p.jsonl:1", "a cat", 9, 5.0),  # the line's steps override the command line's
        ("p.jsonl:2", "a bare string prompt", 2, 5.0),
        ("p.csv:2", "a dog, running", 3, 5.0),  # an empty cell keeps the default
    ]
    assert plan.tasks[2].request.seed == 7
    assert all(t.request.model == MODEL and t.request.batch_size == 1 and t.request.n_iter == 1 for t in plan.tasks)


def test_seeds_expand_each_line_and_a_line_seed_wins(tmp_path):
    prompts = write(tmp_path / "p.jsonl", '{"prompt": "fox"}\n{"prompt": "owl", "seed": 100, "n_iter": 2}\n'
                                          '{"prompt": "cat", "seeds": "50-51"}\n')
    plan = plan_batch([prompts], {}, model=MODEL, seeds=parse_seeds("0-3"))
    seeds = {}
    for task in plan.tasks:
        seeds.setdefault(task.request.prompt, []).append(task.request.seed)
    assert seeds == {"fox": [0, 1, 2, 3], "owl": [100, 101], "cat": [50, 51]}
    assert len({t.key for t in plan.tasks}) == len(plan.tasks) == 8


def test_keys_are_stable_and_depend_on_what_decides_the_pixels(tmp_path):
    a = write(tmp_path / "a.txt", "fox\nowl\n")
    b = write(tmp_path / "b.txt", "\n\nowl\nfox\n")  # same prompts, other order and lines
    key = {t.request.prompt: t.key for t in plan_batch([a], {"seed": 1}, model=MODEL).tasks}
    moved = {t.request.prompt: t.key for t in plan_batch([b], {"seed": 1}, model=MODEL).tasks}
    assert key == moved
    assert plan_batch([a], {"seed": 2}, model=MODEL).tasks[0].key != key["fox"]
    assert plan_batch([a], {"seed": 1}, model="other/model").tasks[0].key != key["fox"]


def test_random_seed_is_derived_from_the_line_so_a_rerun_finds_the_same_images(tmp_path):
    prompts = write(tmp_path / "p.txt", "fox\nowl\n")
    first = plan_batch([prompts], {"seed": -1}, model=MODEL).tasks
    again = plan_batch([prompts], {"seed": -1}, model=MODEL).tasks
    assert [t.key for t in first] == [t.key for t in again]
    assert all(t.request.seed >= 0 for t in first)
    assert first[0].request.seed != first[1].request.seed


def test_bad_lines_name_file_line_and_field_and_good_lines_stay(tmp_path):
    jsonl = write(tmp_path / "p.jsonl", '{"prompt": "ok"}\n{"prompt": "x", "steps": "many"}\nnot json\n[1]\n'
                                        '{"prompt": "y", "colour": "red"}\n')
    csv_file = write(tmp_path / "p.csv", "prompt,width\nok too,64\nbad size,65\n")
    plan = plan_batch([jsonl, csv_file], {}, model=MODEL)
    assert [t.source for t in plan.tasks] == ["p.jsonl:1", "p.csv:2"]
    reported = {e.source: [name for name, _, _ in e.errors] for e in plan.errors}
    assert reported == {"p.jsonl:2": ["steps"], "p.jsonl:3": ["line"], "p.jsonl:4": ["line"],
                        "p.jsonl:5": ["colour"], "p.csv:3": ["width"]}
    assert "p.csv:3: width = '65'" in str(plan.errors[-1])


def test_duplicate_images_are_planned_once(tmp_path):
    prompts = write(tmp_path / "p.txt", "fox\nfox\n")
    plan = plan_batch([prompts], {"seed": 3}, model=MODEL)
    assert len(plan.tasks) == 1 and plan.duplicates == 1


def test_unknown_file_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use .txt"):
        plan_batch([write(tmp_path / "p.yaml", "a: b")], {}, model=MODEL)


# --- manifest and folder (no model) --------------------------------------------------------------------------


def test_torn_manifest_tail_is_cut_and_whole_records_are_kept(tmp_path):
    whole = json.dumps({"key": "a", "status": "failed"}) + "\n"
    (tmp_path / MANIFEST).write_text(whole + '{"key": "b", "sta')  # a kill in the middle of a write
    assert [r["key"] for r in read_manifest(tmp_path / MANIFEST)] == ["a"]
    with BatchDir(tmp_path) as folder:
        folder.append({"key": "c", "status": "failed"})
    lines = (tmp_path / MANIFEST).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]


def test_one_run_at_a_time_per_folder(tmp_path):
    with BatchDir(tmp_path):
        with pytest.raises(BatchDirBusy):
            BatchDir(tmp_path)
    BatchDir(tmp_path).close()  # released with the first


class FlakyEngine:
    """Stands in for Engine: fails the first `failures` calls, then returns a 8×8 image."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0
        self.settings = SimpleNamespace(model=MODEL)
        self.reference = MODEL

    def generate(self, request, progress=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("CUDA out of memory (pretend)")
        text = f"{request.prompt}\nSteps: 1, Sampler: Euler, Seed: {request.seed}"
        return SimpleNamespace(images=[Image.new("RGB", (8, 8), "red")], infotexts=[text], timings={})


def test_failures_are_retried_then_recorded_and_a_rerun_tries_again(tmp_path):
    plan = plan_batch([write(tmp_path / "p.txt", "fox\n")], {"seed": 1}, model=MODEL)
    out = tmp_path / "out"
    engine = FlakyEngine(failures=3)

    def execute(tasks):
        return (generate_task(engine, t, out, retries=1) for t in tasks)

    with BatchDir(out) as folder:
        summary = run_batch(plan, folder, execute)
    assert (summary.done, summary.failed, engine.calls) == (0, 1, 2)
    [failed] = read_manifest(out / MANIFEST)
    assert failed["status"] == "failed" and "out of memory" in failed["error"] and failed["attempts"] == 2

    with BatchDir(out) as folder:  # the next run retries what failed
        summary = run_batch(plan, folder, execute)
    assert (summary.done, summary.failed, summary.skipped) == (1, 0, 0)
    assert engine.calls == 4 and verify_png(out / plan.tasks[0].file, read_infotext(out / plan.tasks[0].file))


# --- `sdart batch` on the tiny model -------------------------------------------------------------------------


def batch_args(tiny_model_dir: Path, *more: str) -> list[str]:
    return ["batch", *more, "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--steps", "2"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def done_records(out: Path) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {}
    for record in read_manifest(out / MANIFEST):
        if record["status"] == "done":
            records.setdefault(record["key"], []).append(record)
    return records


@pytest.mark.slow
def test_cli_batch_makes_every_image_reports_bad_lines_and_resumes(tiny_model_dir, tmp_path):
    files = [write(tmp_path / "p.txt", "a red fox\n"),
             write(tmp_path / "p.jsonl", '{"prompt": "a cat", "seed": 7, "cfg_scale": 3}\n{"prompt": "x", "steps": 0}\n'),
             write(tmp_path / "p.csv", 'prompt,negative_prompt\n"a dog, running",blurry\n')]
    out = tmp_path / "out"
    runner = CliRunner()

    result = runner.invoke(app, batch_args(tiny_model_dir, *map(str, files), "--out", str(out), "--seeds", "0-1"))

    # The bad line fails the run (exit 1) and is named; every good line's images are made anyway.
    assert result.exit_code == 1, result.output
    assert "p.jsonl:2: steps = 0" in result.stderr
    plan = plan_batch(files, {"steps": 2}, model=str(tiny_model_dir), seeds=[0, 1])
    assert len(plan.tasks) == 5  # fox × 2 seeds, cat × its own seed, dog × 2 seeds
    records = done_records(out)
    assert set(records) == {t.key for t in plan.tasks}
    for task in plan.tasks:
        png = out / task.file
        parsed = parse_infotext(read_infotext(png))
        assert (parsed.prompt, int(parsed.params["Seed"]), parsed.params["Steps"]) == (task.request.prompt, task.request.seed, "2")
        assert records[task.key][0]["infotext"] == read_infotext(png)
    assert parse_infotext(read_infotext(out / plan.tasks[-1].file)).negative_prompt == "blurry"

    # Damage three outputs: truncated, wrong parameters chunk, deleted. A rerun redoes exactly those.
    truncated, relabelled, deleted = plan.tasks[0], plan.tasks[1], plan.tasks[2]
    before = pixels(out / truncated.file)
    data = (out / truncated.file).read_bytes()
    (out / truncated.file).write_bytes(data[: len(data) // 2])
    Image.new("RGB", (64, 64)).save(out / relabelled.file)  # decodes fine, but carries no parameters
    (out / deleted.file).unlink()
    manifest_lines = len((out / MANIFEST).read_text().splitlines())

    result = runner.invoke(app, batch_args(tiny_model_dir, *map(str, files), "--out", str(out), "--seeds", "0-1", "--json"))

    assert result.exit_code == 1, result.output  # the bad line is still bad
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"], summary["invalid_lines"]) == (3, 2, 0, 1)
    new = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()[manifest_lines:]]
    assert sorted(r["key"] for r in new) == sorted([truncated.key, relabelled.key, deleted.key])
    assert np.array_equal(pixels(out / truncated.file), before)  # same seed, same pixels
    assert sorted(p.name for p in out.glob("*.png")) == sorted(t.file for t in plan.tasks)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_each_image_once(tiny_model_dir, tmp_path):
    prompts = write(tmp_path / "p.txt", "a red fox\na blue owl\n")
    out = tmp_path / "out"
    args = batch_args(tiny_model_dir, str(prompts), "--out", str(out), "--seeds", "0-4")
    plan = plan_batch([prompts], {"steps": 2}, model=str(tiny_model_dir), seeds=list(range(5)))
    assert len(plan.tasks) == 10

    # 1. A real process, killed with SIGKILL once at least two images are recorded (and before all ten are).
    proc = subprocess.Popen([sys.executable, "-m", "sdart.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while len(done_records(out)) < 2:
            assert proc.poll() is None, f"batch exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no image recorded within 240 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    killed_with = done_records(out)
    assert 2 <= len(killed_with) < 10, "the kill should land mid-run"
    lines = (out / MANIFEST).read_bytes().split(b"\n")
    assert all(json.loads(line) for line in lines[:-1])  # every whole line is a record

    # 2. Resume: only the missing images are made, each once, and every file is whole and labelled.
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["skipped"] + summary["done"] == 10 and summary["skipped"] >= len(killed_with)
    records = done_records(out)
    assert set(records) == {t.key for t in plan.tasks}
    assert all(len(r) == 1 for r in records.values()), "an image recorded twice"
    assert sorted(p.name for p in out.glob("*.png")) == sorted(t.file for t in plan.tasks)
    assert not list(out.glob(".sdart-*.tmp"))
    assert all(verify_png(out / t.file, records[t.key][0]["infotext"]) for t in plan.tasks)
    assert all(json.loads(line) for line in (out / MANIFEST).read_text().splitlines())


def test_batch_without_ray_refuses_worker_options(tmp_path):
    prompts = write(tmp_path / "p.txt", "fox\n")
    result = CliRunner().invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "o"), "--workers", "2"])
    assert result.exit_code == 2 and "--ray" in result.stderr


def test_task_round_trips_through_json(tmp_path):
    task = plan_batch([write(tmp_path / "p.txt", "fox\n")], {"seed": 4}, model=MODEL).tasks[0]
    assert Task.from_json(task.to_json()) == task


def test_ray_option_without_ray_installed_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    prompts = write(tmp_path / "p.txt", "fox\n")
    result = CliRunner().invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "o"), "--ray", "auto"])
    assert result.exit_code == 2
    assert "pip install 'sdart[ray]'" in result.stderr


def test_cli_batch_applies_the_engine_speed_options_and_records_them(tiny_model_dir, tmp_path):
    prompts = write(tmp_path / "p.txt", "a red fox\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, batch_args(tiny_model_dir, str(prompts), "--out", str(out), "--seeds", "5",
                                                "--token-downsampling", "2", "--quantize", "int8"))
    assert result.exit_code == 0, result.output
    (record,) = done_records(out).values()
    params = parse_infotext(read_infotext(out / record[0]["file"])).params
    assert params["Token downsampling"] == "2" and params["Weights"] == "int8"


def test_cli_batch_img2img_lines(tiny_model_dir, tmp_path):
    picture = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (30, 70, 230)).save(picture)
    prompts = write(tmp_path / "p.jsonl", json.dumps({"prompt": "a boat", "init_image": str(picture),
                                                      "denoising_strength": 0.5, "seed": 4}) + "\n"
                    + json.dumps({"prompt": "a boat", "init_image": str(tmp_path / "gone.png")}) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, batch_args(tiny_model_dir, str(prompts), "--out", str(out)))
    # The missing picture is a bad line, named before anything runs; the good line is made.
    assert result.exit_code == 1 and "p.jsonl:2: init_image = " in result.stderr and "no such file" in result.stderr
    (record,) = done_records(out).values()
    params = parse_infotext(read_infotext(out / record[0]["file"])).params
    assert params["Denoising strength"] == "0.5" and params["Seed"] == "4"


def test_cli_batch_hires_lines_and_an_upscaler_the_folder_lacks(tiny_model_dir, tmp_path):
    hires = {"prompt": "a boat", "seed": 4, "width": 64, "height": 64, "enable_hr": True, "hr_scale": 1.5,
             "hr_second_pass_steps": 1}
    prompts = write(tmp_path / "p.jsonl", json.dumps(hires) + "\n" + json.dumps({**hires, "hr_upscaler": "4x-Ultra"}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, batch_args(tiny_model_dir, str(prompts), "--out", str(out)))
    # The missing upscaler is a bad line, named before anything runs; the good line is made at the hires size.
    assert result.exit_code == 1 and "p.jsonl:2: hr_upscaler = '4x-Ultra'" in result.stderr, result.output
    assert result.stderr.count("hr_upscaler") == 1  # the field named once, not again inside its message
    (record,) = done_records(out).values()
    with Image.open(out / record[0]["file"]) as image:
        assert image.size == (96, 96) and parse_infotext(image.info["parameters"]).params["Hires upscale"] == "1.5"


def test_a_line_check_runs_once_per_line_and_makes_a_bad_line(tmp_path):
    """plan_batch's `check` (the CLI's hires upscaler lookup): once per line, not once per seed; its RequestError
    sets the line aside with the field, and the line is not counted as good."""
    prompts = write(tmp_path / "p.jsonl", '{"prompt": "a boat"}\n{"prompt": "a fox", "enable_hr": true}')
    checked = []

    def check(request):
        checked.append(request.prompt)
        if request.enable_hr:
            raise RequestError([("hr_upscaler", "4x-Ultra", "no such upscaler")])

    plan = plan_batch([prompts], {}, model=MODEL, seeds=parse_seeds("0-3"), check=check)
    assert checked == ["a boat", "a fox"]
    assert plan.lines == 1 and len(plan.tasks) == 4
    (error,) = plan.errors
    assert error.source.endswith("p.jsonl:2") and error.errors == [("hr_upscaler", "4x-Ultra", "no such upscaler")]
