"""Compiled artifacts at run time, without compiling: the dispatcher's choice between a loaded artifact and eager,
the switch when a background build finishes, and what /api/v1/health reports. A fake runner stands in for the
AOTInductor package (tests/test_compile_build.py builds real ones)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from sdart.speed import compiled as compiled_module
from sdart.speed.artifacts import ArtifactStore
from sdart.speed.builder import Shape, common_shapes, planned_builds, start_background_compile
from sdart.speed.compile import targets, unet_inputs


class FakeRunner:
    """Records the tensors it is given; answers with a recognisable output of the sample's shape."""

    def __init__(self):
        self.calls = []

    def __call__(self, *tensors):
        self.calls.append(tensors)
        return torch.full_like(tensors[0], 7.0)


@pytest.fixture
def engine(tiny_model_dir, tmp_path):
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32", cache_dir=tmp_path / "cache"))


@pytest.fixture
def fake_load(monkeypatch):
    runners: dict[str, FakeRunner] = {}

    def load(target, package):
        return runners.setdefault(target.component, FakeRunner())

    monkeypatch.setattr(compiled_module, "load", load)
    return runners


def store_artifact(engine, component: str, inputs) -> None:
    """An artifact of `inputs` in the engine's store, as a finished build leaves it."""
    pipe = engine.model.pipeline
    target = next(t for t in targets(pipe, engine.model.family, engine.dtype, engine.device, engine.speed)
                  if t.component == component)
    store: ArtifactStore = engine.compiled.store
    package = store.root.parent / "built.pt2"
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_bytes(b"package")
    store.save(target.key(inputs), package, 3.0)


def test_the_unet_runs_eager_until_its_artifact_exists_then_compiled(engine, fake_load, caplog):
    unet = engine.model.pipeline.unet
    size = engine.model.native_size
    inputs = unet_inputs(unet, 1, size, size)
    sample = torch.randn(inputs[0]).contiguous(memory_format=torch.channels_last)
    context = torch.randn(inputs[2])
    timestep = torch.tensor(981)  # int64, as DPM++ gives it
    with torch.no_grad():
        eager = unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
        assert engine.compiled.dispatchers["unet"].state.eager_calls == 1 and "unet" not in fake_load
        store_artifact(engine, "unet", inputs)
        again = unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
        assert torch.equal(again, eager)  # a miss is remembered: no store lookup per step
        engine.compiled.refresh()  # what the background builder does when it has built something
        with caplog.at_level(logging.INFO, logger="sdart"):
            out = unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
    assert "switching from eager" in caplog.text
    assert torch.equal(out, torch.full_like(sample, 7.0))
    (call,) = fake_load["unet"].calls
    given_sample, given_t, given_context = call
    # The export's layout and timestep form: contiguous sample, a float32 scalar timestep.
    assert given_sample.is_contiguous() and torch.equal(given_sample, sample)
    assert given_t.dtype == torch.float32 and given_t.shape == () and given_t.item() == 981.0
    assert torch.equal(given_context, context)
    status = engine.compiled.status()
    assert status["state"] == "compiled" and status["components"]["unet"]["compiled_calls"] == 1


def test_other_shapes_and_extra_inputs_run_eager(engine, fake_load):
    unet = engine.model.pipeline.unet
    size = engine.model.native_size
    inputs = unet_inputs(unet, 1, size, size)
    store_artifact(engine, "unet", inputs)
    with torch.no_grad():
        no_cfg = torch.randn((1, *inputs[0][1:]))
        unet(no_cfg, 10, encoder_hidden_states=torch.randn((1, *inputs[2][1:])))  # batch 1: no CFG
        long_prompt = torch.randn((2, 154, inputs[2][2]))  # two CLIP chunks
        unet(torch.randn(inputs[0]), 10, encoder_hidden_states=long_prompt)
        unet(torch.randn(inputs[0]), 10, encoder_hidden_states=torch.randn(inputs[2]),
             cross_attention_kwargs={"scale": 0.5})
    assert "unet" not in fake_load or not fake_load["unet"].calls
    assert engine.compiled.dispatchers["unet"].state.eager_calls == 3


def test_a_generation_uses_both_compiled_components(engine, fake_load):
    size = engine.model.native_size
    pipe = engine.model.pipeline
    store_artifact(engine, "unet", unet_inputs(pipe.unet, 1, size, size))
    store_artifact(engine, "vae-decoder", ((1, 4, size // 8, size // 8),))
    engine.generate(prompt="a red circle", steps=2, seed=1, progress=False)
    assert len(fake_load["unet"].calls) == 2 and len(fake_load["vae-decoder"].calls) == 1


def test_a_package_that_fails_to_load_is_discarded_and_runs_eager(engine, monkeypatch):
    def broken(target, package):
        raise RuntimeError("built by another torch")

    monkeypatch.setattr(compiled_module, "load", broken)
    unet = engine.model.pipeline.unet
    size = engine.model.native_size
    inputs = unet_inputs(unet, 1, size, size)
    store_artifact(engine, "unet", inputs)
    with torch.no_grad():
        unet(torch.randn(inputs[0]), 10, encoder_hidden_states=torch.randn(inputs[2]))
    state = engine.compiled.dispatchers["unet"].state
    assert state.eager_calls == 1 and any("another torch" in error for error in state.failed.values())
    assert not any(engine.compiled.store.entries())  # rebuilt next time, never half-used


def test_never_and_the_step_cache_attach_nothing(tiny_model_dir, tmp_path):
    from sdart.engine import Engine
    from sdart.settings import Settings

    for settings, reason in ((dict(compile="never"), "never"), (dict(step_cache=2), "step cache")):
        engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32",
                                                                cache_dir=tmp_path, **settings))
        assert engine.compiled.status()["state"] == "off" and reason in engine.compiled.status()["reason"]
        assert not isinstance(engine.model.pipeline.unet.__dict__.get("forward"), compiled_module.Dispatcher)
        assert start_background_compile(engine) is None


def test_planned_builds_skip_what_the_store_has(engine):
    pipe = engine.model.pipeline
    plan = planned_builds(pipe, engine.model.family, engine.dtype, engine.device, engine.speed,
                          engine.compiled.store, [Shape(), Shape(None, None, 1)])
    assert [t.component for t, _ in plan] == ["unet", "vae-decoder"]  # one shape, asked twice
    size = engine.model.native_size
    store_artifact(engine, "unet", unet_inputs(pipe.unet, 1, size, size))
    plan = planned_builds(pipe, engine.model.family, engine.dtype, engine.device, engine.speed,
                          engine.compiled.store, [Shape()])
    assert [t.component for t, _ in plan] == ["vae-decoder"]


def test_auto_does_not_build_for_a_small_model_always_does(engine, monkeypatch, tmp_path):
    from sdart.speed import builder

    assert start_background_compile(engine) is None and "too small" in engine.compiled.status()["reason"]
    events = [{"event": "plan", "builds": ["unet"]},
              {"event": "built", "what": None, "component": "unet", "build_s": 1.0},
              {"event": "failed", "what": None, "component": "vae-decoder", "error": "RuntimeError: no compiler"},
              {"event": "done"}]
    size = engine.model.native_size
    pipe = engine.model.pipeline

    def fake_build(settings, shapes, *, on_event=None, nice=0, on_spawn=None, echo=False):
        assert settings.model == engine.reference and nice == builder.BACKGROUND_NICE
        descriptions = {t.component: t.key(i).describe() for t, i in planned_builds(
            pipe, engine.model.family, engine.dtype, engine.device, engine.speed, engine.compiled.store, shapes)}
        for event in events:
            if "component" in event:
                event["what"] = descriptions[event["component"]]
            if event["event"] == "built":
                store_artifact(engine, "unet", unet_inputs(pipe.unet, 1, size, size))
            on_event(event)
        return events, tmp_path / "build.log"

    monkeypatch.setattr(builder, "run_build", fake_build)
    monkeypatch.setattr(compiled_module, "load", lambda target, package: FakeRunner())
    engine.compiled.mode = "always"
    background = start_background_compile(engine)
    assert background is not None
    background.join(30)
    status = engine.compiled.status()
    assert status["components"]["unet"]["building"] == [] and status["components"]["vae-decoder"]["failed"]
    with torch.no_grad():
        inputs = unet_inputs(pipe.unet, 1, size, size)
        pipe.unet(torch.randn(inputs[0]), 10, encoder_hidden_states=torch.randn(inputs[2]))
    assert engine.compiled.status()["state"] == "compiled"


def test_common_shapes_is_the_most_frequent_request_shape():
    from sdart.request import GenerationRequest

    requests = [GenerationRequest(prompt="a", width=512, height=512)] * 3 + [GenerationRequest(prompt="b")]
    assert common_shapes(requests) == [Shape(512, 512, 1)]


def test_health_reports_the_compile_state(tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from sdart.engine import Engine
    from sdart.server.app import create_app
    from sdart.settings import Settings

    settings = Settings(device="cpu", dtype="float32", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    engine = Engine(str(tiny_model_dir), settings=settings)
    with TestClient(create_app(settings, engine)) as client:
        health = client.get("/api/v1/health").json()
    assert health["compile"]["mode"] == "auto" and health["compile"]["state"] == "eager"
    assert set(health["compile"]["components"]) == {"unet", "vae-decoder"}


def test_sdxl_hands_its_pooled_embeds_and_time_ids_to_the_artifact(tiny_sdxl_dir, tmp_path, fake_load):
    from sdart.engine import Engine
    from sdart.settings import Settings

    engine = Engine(str(tiny_sdxl_dir), settings=Settings(device="cpu", dtype="float32", cache_dir=tmp_path))
    unet = engine.model.pipeline.unet
    size = engine.model.native_size
    inputs = unet_inputs(unet, 1, size, size)
    assert inputs[3:] == ((2, 32), (2, 6))  # tiny SDXL: 80-wide added embedding = 6 time ids × 8 + pooled 32
    store_artifact(engine, "unet", inputs)
    engine.generate(prompt="a red circle", steps=2, seed=1, progress=False)
    calls = fake_load["unet"].calls
    assert len(calls) == 2 and [tuple(t.shape) for t in calls[0]] == [tuple(s) for s in inputs]
    assert calls[0][4].dtype == torch.float32  # time ids as the export took them


def test_a_swapped_weight_is_given_to_the_package_again(monkeypatch, tmp_path):
    """A request's LoRA tags swap patched copies in for a run (sdart.models.loraswitch): the package, which reads
    the weights where it was told they are, is told again before its next call, and only about those."""
    from sdart.speed import compile as compile_module
    from sdart.testing import build_tiny_pipeline

    class FakeLoader:
        def __init__(self, *args):
            self.given = []

        def get_constant_fqns(self):
            return ["model.conv_in.weight", "model.conv_in.bias"]

        def load_constants(self, constants, inactive, check_full_update, user_managed, to_device):
            assert user_managed and not inactive
            self.given.append({name: tensor.data_ptr() for name, tensor in constants.items()})

        def boxed_run(self, tensors):
            return [tensors[0]]

    monkeypatch.setattr(torch._C._aoti, "AOTIModelPackageLoader", FakeLoader)
    decoder = build_tiny_pipeline("sd15").vae.decoder
    target = compile_module.Target("vae-decoder", decoder, {}, "sd1", torch.float32, torch.device("cpu"), ())
    runner = compile_module.load(target, tmp_path / "package.pt2")
    original = decoder.conv_in.weight
    assert runner.loader.given == [{"model.conv_in.weight": original.data_ptr(),
                                    "model.conv_in.bias": decoder.conv_in.bias.data_ptr()}]
    z = torch.randn(1, 4, 8, 8)
    runner(z)
    assert len(runner.loader.given) == 1  # nothing changed: nothing given again
    patched = torch.nn.Parameter(original.detach() + 1)
    decoder.conv_in.weight = patched
    assert runner.give_weights() and not runner.give_weights()  # what replay() drops a CUDA graph on
    runner(z)
    assert runner.loader.given[-1] == {"model.conv_in.weight": patched.data_ptr()}
    decoder.conv_in.weight = original  # the run is over: the original goes back, and so does the package's
    runner(z)
    assert runner.loader.given[-1] == {"model.conv_in.weight": original.data_ptr()}


def test_on_cuda_a_swapped_weight_drops_that_shapes_captured_graph(monkeypatch):
    """A replayed CUDA graph never calls the package, so replay hands a swapped weight over itself and captures
    that shape's graph again; another shape's graph is captured again only when its own runner finds the swap, and
    with nothing swapped every graph is replayed as it is."""
    from sdart.speed import cudagraphs

    captures = []

    class Graph:
        def replay(self):
            pass

    def fake_capture(runner, tensors):
        captures.append(tuple(tensors[0].shape))
        return Graph(), [t.clone() for t in tensors], tensors[0] * 2

    class Runner:
        def __init__(self):
            self.swapped = False

        def give_weights(self):
            swapped, self.swapped = self.swapped, False
            return swapped

    monkeypatch.setattr(cudagraphs, "_capture", fake_capture)
    graphs: dict = {}
    small, large = Runner(), Runner()  # one package per shape, as the dispatcher keeps them
    z_small, z_large = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 16, 16)
    for _ in range(2):
        cudagraphs.replay(graphs, small, (z_small,))
        cudagraphs.replay(graphs, large, (z_large,))
    assert captures == [(1, 4, 8, 8), (1, 4, 16, 16)]  # captured once each, replayed after
    large_graph = graphs[next(k for k in graphs if k[0][0] == (1, 4, 16, 16))]
    small.swapped = large.swapped = True  # a LoRA run swapped a weight in, which both packages read
    cudagraphs.replay(graphs, small, (z_small,))
    assert captures[2:] == [(1, 4, 8, 8)] and not small.swapped
    assert graphs[next(k for k in graphs if k[0][0] == (1, 4, 16, 16))] is large_graph  # not dropped by the other
    cudagraphs.replay(graphs, large, (z_large,))
    assert captures[3:] == [(1, 4, 16, 16)] and not large.swapped