"""What every sdart command shares: the consoles, exit codes, one-paragraph errors, Ctrl-C handling and logging set-up."""

from __future__ import annotations

import logging
import signal
import sys
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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream), not the one it was
    created with."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


# Libraries that log on their own handlers: their notes (the hub's five "Retrying in 1s" lines before sdart's own
# message about being offline, config remarks) are for debugging, not for the user's terminal.
LIBRARY_LOGGERS = ("huggingface_hub", "diffusers", "transformers", "accelerate", "urllib3", "httpx", "torch")


def configure_logging(debug: bool) -> None:
    """Set up logging once, for the command line: sdart's own warnings (all of its messages with --debug) on
    stderr, each line once; the libraries' only with --debug. Idempotent, so tests and a second command in the same
    process don't stack handlers."""
    import huggingface_hub.utils.logging  # noqa: F401 - its import installs its handler and level: set ours after

    sdart_log = logging.getLogger("sdart")
    if not any(isinstance(h, _StderrHandler) for h in sdart_log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        sdart_log.addHandler(handler)
    sdart_log.setLevel(logging.DEBUG if debug else logging.WARNING)
    sdart_log.propagate = True  # the root logger has no handler of ours: nothing twice, and pytest's caplog sees it
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.setLevel(logging.INFO if debug else logging.ERROR)
        # huggingface_hub has its own stderr handler and also propagates: with a root handler, each line twice.
        library.propagate = not library.handlers
