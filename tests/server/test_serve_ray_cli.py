"""`sdart serve --ray` hands the settings and the scale to Ray Serve instead of starting uvicorn."""

import sys

from typer.testing import CliRunner

from sdart.cli.app import app


def test_serve_ray_passes_scale_and_address(monkeypatch):
    import sdart.server.ray as ray_runner

    calls = []
    monkeypatch.setattr(ray_runner, "serve_on_ray", lambda settings, scale, address, on_ready: calls.append(
        (settings, scale, address)))
    result = CliRunner().invoke(app, ["serve", "--ray", "local", "--model", "builtin:x", "--port", "8123",
                                      "--min-replicas", "1", "--max-replicas", "3", "--gpus-per-replica", "0",
                                      "--step-cache", "3", "--token-downsampling", "2", "--quantize", "int8",
                                      "--compile"])
    assert result.exit_code == 0, result.output
    (settings, scale, address), = calls
    assert address == "local" and settings.port == 8123 and settings.model == "builtin:x"
    assert (settings.step_cache, settings.token_downsampling, settings.quantize, settings.compile) == (3, 2, "int8",
                                                                                                        "always")
    assert scale.autoscaling and (scale.min_replicas, scale.max_replicas, scale.gpus_per_replica) == (1, 3, 0.0)


def test_serve_ray_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    result = CliRunner().invoke(app, ["serve", "--ray", "auto"])
    assert result.exit_code == 2 and "pip install 'sdart[ray]'" in result.stderr


def test_serve_ray_keeps_the_bind_rule(monkeypatch):
    result = CliRunner().invoke(app, ["serve", "--ray", "local", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "api" in result.stderr.lower()
