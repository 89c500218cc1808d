"""One shape for every client error, on both APIs: FastAPI's own `{"detail": [{"loc", "msg", "input"}]}`.

`loc` names the field (`["body", "steps"]`, `["path", "image_id"]`), `msg` says what is wrong with it in the
words of `GenerationRequest`'s validators, `input` echoes the value. A1111 clients already read this shape.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdart.request import RequestError

_MAX_ECHO = 200  # characters of a bad value echoed back (a huge prompt is not worth returning)


class FieldErrors(Exception):
    """Bad input in named fields: (location, value, message) each; answered with `status`."""

    def __init__(self, errors: list[tuple[tuple[str, ...], Any, str]], status: int = 422,
                 headers: dict[str, str] | None = None):
        self.errors = errors
        self.status = status
        self.headers = headers
        super().__init__("; ".join(f"{'.'.join(loc)}: {msg}" for loc, _, msg in errors))

    @classmethod
    def from_request_error(cls, exc: RequestError, where: str = "body") -> FieldErrors:
        return cls([((where, *name.split(".")), value, message) for name, value, message in exc.errors])

    @classmethod
    def one(cls, loc: tuple[str, ...], value: Any, message: str, status: int = 422, **kw: Any) -> FieldErrors:
        return cls([(loc, value, message)], status, **kw)


def _echo(value: Any) -> Any:
    """A bad value as JSON can show it: long text cut, NaN and infinities (which JSON has no words for) as text,
    anything else by its repr."""
    if isinstance(value, str) and len(value) > _MAX_ECHO:
        return value[:_MAX_ECHO] + "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return str(value)  # JSON readers in other languages lose integers past 64 bits
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…"


def error_body(errors: list[tuple[tuple[Any, ...], Any, str]]) -> dict[str, Any]:
    return {"detail": [{"loc": list(loc), "msg": msg, "input": _echo(value)} for loc, value, msg in errors]}


def install(app: FastAPI) -> None:
    """Answer FieldErrors and FastAPI's own validation errors in the one shape."""

    @app.exception_handler(FieldErrors)
    async def _field_errors(request: Request, exc: FieldErrors) -> JSONResponse:
        return JSONResponse(error_body(exc.errors), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode at all (too deeply nested, …) with a bare 400 string: say it
        # in the one shape, naming the body. Other HTTP errors (404 for an unknown route) keep FastAPI's shape.
        if exc.status_code == 400 and isinstance(exc.detail, str):
            return JSONResponse(error_body([(("body",), None, exc.detail)]), status_code=400, headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_readable(err) for err in exc.errors()]
        return JSONResponse(error_body(errors), status_code=422)


def _readable(err: dict[str, Any]) -> tuple[tuple[Any, ...], Any, str]:
    if err.get("type") == "json_invalid":  # FastAPI puts the character offset in loc; say it in words instead
        reason = (err.get("ctx") or {}).get("error", "")
        return ("body",), None, f"not valid JSON ({reason}) at character {err['loc'][-1]}"
    return tuple(err["loc"]), err.get("input"), str(err["msg"]).removeprefix("Value error, ")
