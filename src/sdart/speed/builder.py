"""Building missing artifacts in a child process, in the foreground (`sdart compile`, `--compile always`) or in
the background (the server and the batch runner, which run eager meanwhile).

A child process, because compiling prints: dynamo notes, Inductor warnings, compiler lines. The child's output
goes to a log file under the cache folder (`--debug` shows it), and it reports to the parent in one-line JSON
events, from which the parent draws sdart's own progress line. A child also keeps the export's and compiler's
memory out of a long-running server, and runs at a lower priority than the eager work it overlaps.

    python -m sdart.speed.builder < request.json    # {"settings": {...}, "shapes": [[w, h, batch, cfg], ...]}
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENT = "SDART_BUILD "
BACKGROUND_NICE = 10  # below the eager work the build overlaps with
# A batch smaller than this doesn't start a background compile: on a 2-core CPU an SD 1.5 build costs several
# minutes of both cores, and a compiled 25-step image saves about half a minute (benchmarks/NOTES.md).
BACKGROUND_MIN_IMAGES = 8
# compile = auto builds in the background only for a UNet this large (SD 1.5 has 860 M parameters): on a small
# model (the bundled shapes model has 2.7 M) a step takes milliseconds and the minutes of building never pay.
AUTO_MIN_UNET_PARAMS = 100_000_000


@dataclass(frozen=True)
class Shape:
    """One image shape to compile for: width and height in pixels (None: the model's size), images per batch."""

    width: int | None = None
    height: int | None = None
    batch: int = 1
    cfg: bool = True  # classifier-free guidance (cfg_scale > 1): the UNet sees twice the batch


def planned_builds(pipe, family: str, dtype, device, options, store, shapes: list[Shape]) -> list[tuple[Any, tuple]]:
    """(target, input shapes) of every artifact `shapes` need that the store lacks, UNet first."""
    from sdart.speed.compile import decoder_inputs, targets, unet_inputs

    native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    wanted = []
    for target in targets(pipe, family, dtype, device, options):
        for shape in shapes:
            width, height = shape.width or native, shape.height or native
            inputs = (unet_inputs(pipe.unet, shape.batch, width, height, cfg=shape.cfg) if target.component == "unet"
                      else decoder_inputs(pipe.vae, shape.batch, width, height))
            if store.find(target.key(inputs)) is None and (target, inputs) not in wanted:
                wanted.append((target, inputs))
    return wanted


def _emit(event: str, **fields: Any) -> None:
    sys.__stdout__.write(EVENT + json.dumps({"event": event, **fields}) + "\n")
    sys.__stdout__.flush()


def child_main() -> None:
    """The child: load the model as the parent's settings say, build what is missing, report each step."""
    request = json.loads(sys.stdin.read())
    if request.get("nice"):
        os.nice(request["nice"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sdart.engine import Engine
    from sdart.settings import Settings
    from sdart.speed.artifacts import ArtifactStore
    from sdart.speed.compile import build

    settings = Settings(**{**request["settings"], "compile": "never"})
    engine = Engine(settings.model, settings=settings)
    store = ArtifactStore(settings.cache_dir)
    shapes = [Shape(*shape) for shape in request["shapes"]]
    builds = planned_builds(engine.model.pipeline, engine.model.family, engine.dtype, engine.device, engine.speed,
                            store, shapes)
    _emit("plan", builds=[target.key(inputs).describe() for target, inputs in builds])
    for target, inputs in builds:
        key = target.key(inputs)
        eta = store.last_build_s(key.component, key.device)
        _emit("start", what=key.describe(), component=key.component, eta_s=eta)
        package = store.root / f"{key.folder_name}.{os.getpid()}.pt2"
        package.parent.mkdir(parents=True, exist_ok=True)
        try:
            build_s = build(target, inputs, package)
            store.save(key, package, build_s)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which runs eager
            log.exception("building %s failed", key.describe())
            package.unlink(missing_ok=True)
            _emit("failed", what=key.describe(), component=key.component, error=f"{type(exc).__name__}: {exc}")
            continue
        _emit("built", what=key.describe(), component=key.component, build_s=round(build_s, 1))
    _emit("done")


def build_log_path(cache_dir: Path | None) -> Path:
    from sdart.speed.artifacts import ArtifactStore

    folder = ArtifactStore(cache_dir).root.parent / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"build-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def run_build(settings, shapes: list[Shape], *, on_event: Callable[[dict], None] | None = None,
              echo: bool = False, nice: int = 0,
              on_spawn: Callable[[subprocess.Popen], None] | None = None) -> tuple[list[dict], Path]:
    """Run the child to completion; every event is passed to `on_event` as it arrives. `echo`: library output
    to this terminal too (--debug). Returns the events and the log file's path."""
    log_path = build_log_path(settings.cache_dir)
    request = {"settings": settings.model_dump(mode="json", exclude={"api_key"}), "nice": nice,
               "shapes": [[s.width, s.height, s.batch, s.cfg] for s in shapes]}
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache_dir(settings))}
    events = []
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "sdart.speed.builder"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=None if echo else log_file, text=True, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        if on_spawn is not None:
            on_spawn(proc)
        proc.stdin.write(json.dumps(request))
        proc.stdin.close()
        for line in proc.stdout:
            if line.startswith(EVENT):
                event = json.loads(line.removeprefix(EVENT))
                events.append(event)
                log_file.write(line)
                log_file.flush()
                if on_event is not None:
                    on_event(event)
            else:
                log_file.write(line)
                if echo:
                    sys.stderr.write(line)
        code = proc.wait()
    if code != 0 and not any(e["event"] == "done" for e in events):
        events.append({"event": "crashed", "error": f"the build process exited with status {code}"})
        if on_event is not None:
            on_event(events[-1])
    return events, log_path


def inductor_cache_dir(settings) -> Path:
    """Inductor's own kernel cache for builds (a rebuild after a cleared store reuses compiled kernels)."""
    from sdart.speed.artifacts import ArtifactStore

    return Path(settings.compile_cache_dir or ArtifactStore(settings.cache_dir).root.parent / "inductor")


class BackgroundBuild:
    """Builds an Engine's missing artifacts in a thread that waits on the child; the Engine runs eager meanwhile,
    and switches at the next call after each artifact is ready."""

    def __init__(self, engine, shapes: list[Shape]):
        self.engine = engine
        self.shapes = shapes
        self.process: subprocess.Popen | None = None
        self.thread = threading.Thread(target=self._run, name="sdart-compile", daemon=True)

    def start(self) -> BackgroundBuild:
        compiled = self.engine.compiled
        if compiled is None or not compiled.dispatchers:
            return self
        pipe = self.engine.model.pipeline
        builds = planned_builds(pipe, self.engine.model.family, self.engine.dtype, self.engine.device,
                                self.engine.speed, compiled.store, self.shapes)
        if not builds:
            return self
        for target, inputs in builds:
            compiled.dispatchers[target.component].state.building.append(target.key(inputs).describe())
        log.info("compiling %s in the background; running eager until ready",
                 ", ".join(t.key(i).describe() for t, i in builds))
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)

    def stop(self) -> None:
        """End an unfinished build (the process is exiting); what was already built stays in the store."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            log.info("background compile stopped before it finished")
        self.join(10)

    def _run(self) -> None:
        compiled = self.engine.compiled
        settings = self.engine.settings.model_copy(update={"model": self.engine.reference})

        def on_event(event: dict) -> None:
            state = compiled.dispatchers.get(event.get("component", ""), None)
            state = state.state if state is not None else None
            if event["event"] == "built" and state is not None:
                _discard(state.building, event["what"])
                compiled.refresh()
                log.info("compiled %s built in %.0f s", event["what"], event["build_s"])
            elif event["event"] == "failed" and state is not None:
                _discard(state.building, event["what"])
                state.failed[event["what"]] = event["error"]
                log.warning("compiling %s failed (%s); it runs eager", event["what"], event["error"])

        try:
            events, log_path = run_build(settings, self.shapes, on_event=on_event, nice=BACKGROUND_NICE,
                                         on_spawn=lambda proc: setattr(self, "process", proc))
        except OSError as exc:
            events, log_path = [{"event": "crashed", "error": str(exc)}], None
        for dispatcher in compiled.dispatchers.values():
            if dispatcher.state.building:
                for what in dispatcher.state.building:
                    dispatcher.state.failed[what] = events[-1].get("error", "the build stopped")
                dispatcher.state.building.clear()
                log.warning("background compile stopped (%s); see %s", events[-1].get("error"), log_path)


def start_background_compile(engine, shapes: list[Shape] | None = None) -> BackgroundBuild | None:
    """For the server and the batch runner: build what `shapes` (default: the model's size, one image) lack,
    in the background, unless compile = never or nothing compiles on this engine (step cache, device…)."""
    compiled = getattr(engine, "compiled", None)  # a Ray Serve front has none: its replicas hold the models
    if compiled is None or compiled.mode == "never" or not compiled.dispatchers:
        return None
    if compiled.mode == "auto" and engine.model.pipeline.unet.num_parameters() < AUTO_MIN_UNET_PARAMS:
        compiled.reason = "compile = auto: the model is too small for a compile to pay (compile = always builds it)"
        return None
    return BackgroundBuild(engine, shapes or [Shape()]).start()


def common_shapes(requests, limit: int = 1) -> list[Shape]:
    """The `limit` most frequent (width, height, batch size) among requests: what a batch compiles for."""
    from collections import Counter

    counts = Counter(Shape(r.width, r.height, r.batch_size, r.cfg_scale > 1) for r in requests)
    return [shape for shape, _ in counts.most_common(limit)]


def _discard(items: list[str], item: str) -> None:
    if item in items:
        items.remove(item)


if __name__ == "__main__":
    child_main()
