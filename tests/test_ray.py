"""Ray: `sdart batch --ray` on a 2-actor pool gives the local run's pixels; the server behind Ray Serve answers
the native jobs API on loopback. One local cluster (`ray.init(num_cpus=2)`) is shared by all of them."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdart.batch.manifest import read_manifest
from sdart.batch.plan import MANIFEST, plan_batch
from sdart.cli.app import app

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'sdart[ray]'")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="session")
def ray_cluster(tiny_model_dir):
    """A 2-CPU local cluster for the whole session (starting one costs ~10 s). The tiny model is built first so
    that the workers, started with the cluster, see the same environment as the tests."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


def cli_args(tiny_model_dir: Path, prompts: Path, out: Path, *more: str) -> list[str]:
    return ["batch", str(prompts), "--out", str(out), "--seeds", "0-2", "--steps", "2", "--model", str(tiny_model_dir),
            "--device", "cpu", "--dtype", "float32", "--json", *more]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_ray_data_batch_on_two_actors_matches_the_local_run(ray_cluster, tiny_model_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\na blue owl\n")
    local, remote = tmp_path / "local", tmp_path / "ray"
    runner = CliRunner()

    # Each actor gets 1 CPU and so 1 torch thread. The local run uses 1 thread too: float sums in another
    # order (2 threads) can move a rare pixel by 1/255, and this test wants equality, not closeness.
    monkeypatch.setenv("SDART_THREADS", "1")
    result = runner.invoke(app, cli_args(tiny_model_dir, prompts, local))
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("SDART_THREADS")
    result = runner.invoke(app, cli_args(tiny_model_dir, prompts, remote, "--ray", "auto", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 6

    plan = plan_batch([prompts], {"steps": 2}, model=str(tiny_model_dir), seeds=[0, 1, 2])
    for task in plan.tasks:  # same keys, same files, same pixels, same parameters chunk
        assert np.array_equal(pixels(local / task.file), pixels(remote / task.file)), task
        with Image.open(local / task.file) as a, Image.open(remote / task.file) as b:
            assert a.info["parameters"] == b.info["parameters"]
    records = list(read_manifest(remote / MANIFEST))
    assert sorted(r["key"] for r in records) == sorted(t.key for t in plan.tasks)
    assert len({r["worker"] for r in records}) == 2, "both actors should have made images"

    # Resuming on Ray skips everything done (verified on disk) and starts no actor.
    started = time.monotonic()
    result = runner.invoke(app, cli_args(tiny_model_dir, prompts, remote, "--ray", "auto", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["skipped"], json.loads(result.stdout)["done"]) == (6, 0)
    assert time.monotonic() - started < 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_answers_the_native_jobs_api_on_loopback(ray_cluster, tiny_model_dir, tiny_engine, tmp_path):
    import httpx

    from sdart.request import GenerationRequest
    from sdart.server.ray import ServeScale, start_serve
    from sdart.settings import Settings

    settings = Settings(model=str(tiny_model_dir), device="cpu", dtype="float32", host="127.0.0.1",
                        port=free_port(), data_dir=tmp_path / "data")
    base = start_serve(settings, ServeScale(replicas=2, cpus_per_replica=1))
    from ray import serve

    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            health = client.get("/api/v1/health").json()
            assert health["status"] == "ok" and tiny_model_dir.name in health["model"], health
            bodies = [{"prompt": "a red fox", "seed": 11, "steps": 2}, {"prompt": "a blue owl", "seed": 12, "steps": 2,
                                                                           "n_iter": 2}]
            ids = []
            for body in bodies:
                response = client.post("/api/v1/jobs", json=body)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            deadline = time.monotonic() + 120
            jobs = {}
            while len(jobs) < len(ids):
                assert time.monotonic() < deadline, f"jobs not finished: {client.get('/api/v1/jobs').text[:2000]}"
                for job_id in ids:
                    job = client.get(f"/api/v1/jobs/{job_id}").json()
                    assert job["status"] not in ("failed", "cancelled"), job
                    if job["status"] == "succeeded":
                        jobs[job_id] = job
                time.sleep(0.2)
            # The replicas' images are the images the same request gives on a local Engine. (Replicas run 1 torch
            # thread, the local engine 2; equal here for these seeds — see docs/batch.md, Determinism.)
            for body, job_id in zip(bodies, ids):
                job = jobs[job_id]
                expected = tiny_engine.generate(GenerationRequest.parse(body), progress=False)
                assert [image["seed"] for image in job["images"]] == expected.seeds
                for image, want, text in zip(job["images"], expected.images, expected.infotexts):
                    png = client.get(image["url"])
                    assert png.status_code == 200
                    got = Image.open(io.BytesIO(png.content))
                    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB")))
                    assert got.info["parameters"] == text
    finally:
        serve.delete("sdart")


def test_a_pool_the_cluster_cannot_hold_is_named_not_waited_on(ray_cluster, tiny_model_dir, tmp_path, monkeypatch):
    """Three 1-CPU actors on the 2-CPU cluster: the third never starts; the run says why instead of hanging."""
    monkeypatch.setattr("sdart.batch.ray.ACTOR_START_TIMEOUT_S", 5)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\n")
    result = CliRunner().invoke(app, cli_args(tiny_model_dir, prompts, tmp_path / "out", "--ray", "auto",
                                              "--workers", "3"))
    assert result.exit_code == 1, result.output
    message = " ".join(result.stderr.split())
    assert "Ray did not start 3 worker(s) within 5 s" in message and "--workers 3 × 1 CPU" in message
    assert "model load" in message  # the other reason a pool can be late
