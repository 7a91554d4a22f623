"""ASGI middleware: bearer-key authentication and request body limits.

Both are plain ASGI (not ``BaseHTTPMiddleware``) so streamed responses (SSE,
downloads) pass through untouched and bodies are counted as they arrive.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException as StarletteHTTPException

from ._errors import error_body
from ._signing import BadSignature, UrlSigner

__all__ = ["AuthMiddleware", "BodyLimitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/")
OPEN_PREFIXES = ("/docs", "/playground/")
"""The web playground's page and static files hold no data: the page asks for the key."""


async def _send_json(send: Send, status: int, doc: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(doc).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """Require ``Authorization: Bearer <key>`` on everything but health checks and docs.

    GET requests may pass the key as ``?api_key=`` instead, for clients that cannot
    set headers (``<audio src>``, ``EventSource``). Keys are compared in constant time.
    An artifact download with a signed link (``?expires=&sig=``, see ``_signing``)
    passes without a key when the signature holds, and gets 403 when it does not.
    """

    def __init__(self, app: ASGIApp, keys: list[str], signer: UrlSigner | None = None) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]
        self.signer = signer

    def _ok(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        value = candidate.encode()
        found = False
        for key in self.keys:
            found |= hmac.compare_digest(value, key)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            return await self.app(scope, receive, send)
        path: str = scope.get("path", "")
        if scope.get("method") == "OPTIONS" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        if self.signer is not None and scope.get("method") in ("GET", "HEAD"):
            try:
                if self.signer.check_request(path, scope.get("query_string", b"")):
                    return await self.app(scope, receive, send)
            except BadSignature as exc:
                return await _send_json(send, 403, error_body(403, exc.message, "BadSignature"))
        token = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
                break
        if token is None and scope.get("method") == "GET":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            token = (query.get("api_key") or [None])[0]
        if self._ok(token):
            return await self.app(scope, receive, send)
        message = "missing API key: send 'Authorization: Bearer <key>'" if token is None else "invalid API key"
        await _send_json(send, 401, error_body(401, message, "AuthenticationError"),
                         [(b"www-authenticate", b'Bearer realm="orchestrator"')])


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive`` mid-body; the app's HTTPException handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the {limit}-byte limit")


class BodyLimitMiddleware:
    """413 for bodies over a limit, by ``Content-Length`` up front or by counting chunks.

    ``limit_for(method, path)`` picks the limit (uploads get a bigger one). An
    oversize body announced by ``Content-Length`` is read and dropped (up to
    ``drain_max`` bytes) before answering, so clients that send the whole body
    before reading see the 413 rather than a reset connection.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int], *, drain_max: int = 64 << 20) -> None:
        self.app = app
        self.limit_for = limit_for
        self.drain_max = drain_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope.get("method", ""), scope.get("path", ""))
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            await self._drain(receive, declared)
            return await self._reject(send, limit)
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, limit)

    async def _drain(self, receive: Receive, declared: int) -> None:
        if declared > self.drain_max:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        await _send_json(send, 413, error_body(413, f"request body is over the {limit}-byte limit", "PayloadTooLarge",
                                               limit=limit), [(b"connection", b"close")])
