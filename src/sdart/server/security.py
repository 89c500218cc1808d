"""Who may talk to the server and how much they may send.

- Binding beyond loopback needs an API key (`check_bind`).
- With a key, every route but health needs `Authorization: Bearer KEY`, or HTTP Basic with the key as the
  password (A1111 clients use `--api-auth user:pass`; the browser shows its login box for Basic, and then
  sends the credentials with every request of the page, images and event streams included).
- Request bodies are capped (`BodyLimit`), counted as they arrive, so a missing or lying Content-Length
  doesn't help.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/api/v1/health"})


class UnsafeBind(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise UnsafeBind(f"host = {host!r}: listening beyond this machine needs an API key "
                         "(--api-key or SDART_API_KEY); clients then send `Authorization: Bearer KEY`")


def credentials_match(header: str | None, api_key: str) -> bool:
    """Bearer KEY, or Basic with KEY as the password (any user name)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return secrets.compare_digest(value.encode(), api_key.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, _, password = decoded.partition(":")
        return secrets.compare_digest(password.encode(), api_key.encode())
    return False


async def _send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


class ApiKeyAuth:
    """ASGI middleware: 401 for every HTTP request without the key, except PUBLIC_PATHS."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1") or None
        if credentials_match(header, self.api_key):
            await self.app(scope, receive, send)
            return
        message = "missing credentials" if header is None else "wrong credentials"
        await _send_json(send, 401, {"detail": [{"loc": ["header", "Authorization"], "input": None,
                                                 "msg": f"{message}: send `Authorization: Bearer <api key>`"}]},
                         [(b"www-authenticate", b'Basic realm="sdart"')])


class BodyLimit:
    """ASGI middleware: 413 when a request body is over `limit` bytes, declared or as received.

    The body is read in full before the app sees it (bodies here are small JSON documents), so the app never
    starts on a request that will turn out too large.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send, int(declared))
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.limit:
                await self._reject(send, received)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        await _send_json(send, 413, {"detail": [{"loc": ["body"], "input": None,
                                                 "msg": f"request body is {size}+ bytes; this server accepts at most "
                                                        f"{self.limit} (max_body_bytes)"}]})
