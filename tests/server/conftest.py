"""Fixtures for the server tests: real `sdart serve` processes on loopback, on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_S = 120  # importing torch + diffusers on 2 busy cores is most of it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One `sdart serve` subprocess. `url` is its base URL; `client` an httpx client bound to it."""

    def __init__(self, model_dir: Path | str, data_dir: Path, log_path: Path, *args: str, env: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None):
        self.model_dir = model_dir
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = args
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("SDART_")}, **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = headers or {}
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "sdart.cli", "serve", "--model", str(self.model_dir), "--port",
                   str(self.port), "--data-dir", str(self.data_dir), "--device", "cpu", "--dtype", "float32",
                   "--log-level", "warning", *self.args]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sdart serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"sdart serve did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def close(self) -> None:
        self.stop()
        self.client.close()

    # --- helpers -------------------------------------------------------------------------------------------

    def submit(self, **fields) -> str:
        response = self.client.post("/api/v1/jobs", json={"width": 64, "height": 64, **fields})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, job_id: str, timeout: float = 60) -> list[tuple[str, dict]]:
        """Read the job's SSE stream to its end: (event name, data) pairs."""
        events: list[tuple[str, dict]] = []
        name = None
        with self.client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
        return events

    def wait(self, job_id: str, timeout: float = 60, until=lambda job: job["status"] in
             ("succeeded", "failed", "cancelled")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {self.job(job_id)['status']} after {timeout} s")


@pytest.fixture(scope="session")
def second_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model under another name: switching to it shows in the `Model:` of the infotext."""
    target = tmp_path_factory.mktemp("models2") / "tiny-other"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture(scope="session")
def live_server(tiny_model_dir, second_model_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """One server shared by the tests that don't need their own: default limits, no API key."""
    root = tmp_path_factory.mktemp("live")
    server = ServerProcess(tiny_model_dir, root / "data", root / "server.log",
                           env={"SDART_EXTRA_MODELS": f'["{second_model_dir}"]'})
    server.start()
    yield server
    server.close()


@pytest.fixture
def make_server(tiny_model_dir, tmp_path) -> Iterator:
    """Start servers of one's own (tight limits, API key, kill -9); all stopped after the test."""
    started: list[ServerProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, headers: dict[str, str] | None = None,
             data_dir: Path | None = None, model: str | Path | None = None) -> ServerProcess:
        server = ServerProcess(model or tiny_model_dir, data_dir or tmp_path / "data",
                               tmp_path / f"server{len(started)}.log", *args, env=env, headers=headers)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def shapes_server(tiny_model_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """The bundled shapes model (64 px pictures that follow the prompt), with the tiny model as a second one to
    switch to, a VAE folder holding one VAE (the shapes model's own) and a LoRA folder holding one LoRA made for
    it (random low-rank weights: it changes the picture, which is all a page test needs), and an embeddings folder
    with one embedding that fits and one that does not."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from sdart.models.resolve import BUILTIN_DIR
    from sdart.testing.lora import save_lora

    root = tmp_path_factory.mktemp("shapes")
    (root / "vae").mkdir()
    (root / "vae" / "shapes-vae").symlink_to(BUILTIN_DIR / "shapes" / "vae")  # its own VAE, under a VAE folder name
    pipe = StableDiffusionPipeline.from_pretrained(str(BUILTIN_DIR / "shapes"))
    save_lora(pipe, root / "lora" / "shapes-bold.safetensors", alpha=4, strength=4.0)
    # An embedding holding the word "circle"'s own vectors (kohya's layout), and one too wide for this model.
    (root / "embeddings").mkdir()
    ids = pipe.tokenizer("circle", add_special_tokens=False).input_ids
    vectors = pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone()
    save_file({"emb_params": vectors}, root / "embeddings" / "roundish.safetensors")
    save_file({"emb_params": torch.zeros(2, 768)}, root / "embeddings" / "wide-one.safetensors")
    server = ServerProcess("builtin:shapes", root / "data", root / "server.log",
                           env={"SDART_EXTRA_MODELS": json.dumps([str(tiny_model_dir)]),
                                "SDART_VAE_DIR": str(root / "vae"), "SDART_LORA_DIR": str(root / "lora"),
                                "SDART_EMBEDDINGS_DIR": str(root / "embeddings")})
    server.start()
    yield server
    server.close()


API_KEY = "test-key-0123"
STRICT_LIMITS = {"SDART_API_KEY": API_KEY, "SDART_MAX_STEPS": "20", "SDART_MAX_SIDE": "128", "SDART_MAX_IMAGES": "4",
                 "SDART_MAX_PROMPT_CHARS": "100", "SDART_MAX_QUEUE": "3", "SDART_MAX_BODY_BYTES": "65536",
                 "SDART_CORS_ORIGINS": '["http://allowed.example"]'}


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def strict_server(tiny_model_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with an API key, tight limits and CORS for one origin; its client sends the key."""
    root = tmp_path_factory.mktemp("strict")
    server = ServerProcess(tiny_model_dir, root / "data", root / "server.log", env=STRICT_LIMITS,
                           headers={"Authorization": f"Bearer {API_KEY}"})
    server.start()
    yield server
    server.close()


# --- the web page in Debian's chromium, driven by Playwright -------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Endpoints the page probes and hides its control for when they answer 404 (another part of the API may lack them).
OPTIONAL_ENDPOINTS = ("/sdapi/v1/loras", "/sdapi/v1/embeddings", "/sdapi/v1/sd-vae", "/sdapi/v1/upscalers",
                      "/sdapi/v1/latent-upscale-modes")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (a new context per page keeps tests apart)."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """open_page(url, before_load=None): a fresh browser context on the page, ready (body[data-ready]).
    `page.errors` collects script errors (none may remain at the end of the test) and `page.failed_responses`
    the refused requests other than optional-endpoint probes. `before_load(page)` runs first (route stubs)."""
    pages = []

    def open_(url: str, before_load=None):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda message: message.type == "error" and not message.text.startswith(
            "Failed to load resource") and page.errors.append(message.text))
        page.failed_responses = []
        base = url.split("/", 3)[:3]
        page.on("response", lambda response: response.status >= 400 and not (
            response.status == 404 and response.url.removeprefix("/".join(base)) in OPTIONAL_ENDPOINTS)
            and page.failed_responses.append(f"{response.status} {response.url}"))
        pages.append(page)
        if before_load:
            before_load(page)
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        return page

    yield open_
    errors = [error for page in pages for error in page.errors]
    for page in pages:
        page.context.close()
    assert errors == [], f"errors in the page: {errors}"


STYLES_CSV = ('name,prompt,negative_prompt\n'
              '"Cinematic","cinematic still of {prompt}, film grain","cartoon, drawing"\n'
              'Sharp,"highly detailed",blurry\n'
              '# a comment row,ignored,\n')


@pytest.fixture(scope="session")
def a1111_dirs(tmp_path_factory) -> dict[str, Path]:
    """A VAE folder holding one tiny VAE (a single .safetensors file, other weights than the model's) and a
    styles.csv in A1111's format."""
    from safetensors.torch import save_file

    from sdart.testing import tiny_sd15_components

    root = tmp_path_factory.mktemp("a1111")
    vae_dir = root / "VAE"
    vae_dir.mkdir()
    vae = tiny_sd15_components(seed=3)["vae"]
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, vae_dir / "tiny-vae.safetensors")
    (root / "styles.csv").write_text(STYLES_CSV)
    return {"vae_dir": vae_dir, "styles": root / "styles.csv", "root": root}


@pytest.fixture(scope="session")
def a1111_server(tiny_model_dir, second_model_dir, a1111_dirs) -> Iterator[ServerProcess]:
    """A server of its own for the A1111 tests that change settings: a VAE folder, a styles file, two models."""
    root = a1111_dirs["root"]
    server = ServerProcess(tiny_model_dir, root / "data", root / "server.log",
                           env={"SDART_EXTRA_MODELS": f'["{second_model_dir}"]', "SDART_VAE_DIR": str(a1111_dirs["vae_dir"]),
                                "SDART_STYLES_FILE": str(a1111_dirs["styles"])})
    server.start()
    yield server
    server.close()
