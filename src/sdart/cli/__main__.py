"""`python -m sdart.cli …` runs the `sdart` command."""

from sdart.cli.app import app

app()
