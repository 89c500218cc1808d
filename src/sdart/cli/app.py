"""The `sdart` command: every subcommand registered on one Typer app. Each lives in its own module and imports its
heavy dependencies (torch, diffusers, the server, Ray) inside the command, so `sdart --help` stays fast."""

from __future__ import annotations

import typer

from sdart.cli.batch import batch
from sdart.cli.cache import cache
from sdart.cli.compile import compile
from sdart.cli.generate import generate
from sdart.cli.info import info, models, samplers, version
from sdart.cli.options import CompileFlagCommand
from sdart.cli.serve import serve
from sdart.cli.upscale import upscale

app = typer.Typer(
    help="Art from text prompts with Stable Diffusion, on a laptop CPU, a GPU or a cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (generate, upscale, info, samplers, models, version, serve, batch, compile):
    app.command(cls=CompileFlagCommand)(command)
app.add_typer(cache, name="cache")
