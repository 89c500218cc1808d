"""What every sdart command shares: the consoles, exit codes, one-paragraph errors, Ctrl-C handling and logging set-up."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


out = Console()


EXIT_FAILED = 1


EXIT_BAD_INPUT = 2


EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # messages quote user text
    return typer.Exit(code)


@contextmanager
def friendly_errors(debug: bool):
    """Known failures become one clear message and an exit code; tracebacks only with --debug."""
    from pydantic import ValidationError

    from sdart.request import RequestError

    try:
        yield
    except typer.Exit:
        raise
    except (RequestError, ValidationError) as exc:  # request fields, or settings from flags/env/.env
        if debug:
            raise
        if isinstance(exc, ValidationError):
            exc = RequestError.from_validation_error(exc)
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    except Exception as exc:
        from sdart.images.output import OutputError
        from sdart.models.errors import ModelLoadError

        if debug:
            raise
        if isinstance(exc, (OutputError, ValueError)):
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        if isinstance(exc, ModelLoadError):
            raise fail(str(exc)) from None
        raise fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)") from None


@contextmanager
def cancel_on_ctrl_c():
    """First Ctrl-C: stop after the current step and keep finished images. Second: stop now."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        err.print("[yellow]stopping after this step… (Ctrl-C again to stop at once)[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def configure_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
