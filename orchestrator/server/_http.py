"""The HTTP/1.1 protocol the server listens with: uvicorn's httptools protocol plus head limits.

uvicorn bounds nothing while a request head arrives: a client that sends its headers a
byte at a time holds a connection for ever (slowloris), and a head that arrives whole
is parsed whatever its size. :class:`HeadDeadlineProtocol` answers 431 and closes when
a request head (request line and headers) is over ``max_header_bytes``, and closes a
connection whose head is not complete ``header_timeout_seconds`` after the connection
opened or the previous response ended.

Writes are corked: what the app sends during one turn of the event loop goes to the socket
in one ``write`` (one system call, one TCP segment), so a response's head and body, or an
event stream's last event and the end of its body, travel together (:class:`CorkedTransport`).

The limits sit in front of the parser, so they hold whatever parser is underneath: while
a head is awaited, the bytes received are kept (up to the limit, plus the blank line that
ends a head) and checked before the parser sees them; the parser's ``on_headers_complete``
ends the wait. The parser is httptools (llhttp, in C): it costs a fraction of the pure-Python
h11's CPU per request, and the server's requests are small and many.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CorkedTransport", "HeadDeadlineProtocol", "protocol_with_head_limits"]

logger = logging.getLogger("orchestrator.server.http")


class CorkedTransport:
    """A transport whose writes during one turn of the event loop go out as one write, at the end of it.

    uvicorn writes a response's head, each body chunk and the end of a chunked body separately;
    each is a system call and a segment the client wakes up for. Everything else (closing, flow
    control, extra info) is the wrapped transport's; closing sends what is pending first.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data) if not isinstance(data, bytes) else data)

    def flush(self) -> None:
        """Send what was written so far (one write)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses request heads over ``head_limit`` bytes and drops connections
    whose request head takes longer than ``head_timeout`` seconds."""

    head_timeout: float = 10.0
    head_limit: int = 32 << 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head = bytearray()  # the start of the request head being received
        self._awaiting_head = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._awaiting_head:
            self._head += data[: self.head_limit + 4 - len(self._head)]
            if b"\r\n\r\n" not in self._head and b"\n\n" not in self._head and len(self._head) > self.head_limit:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head.clear()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # the next request on this connection gets the same limits (a pipelined one queued
        # meanwhile was parsed whole already)
        self._awaiting_head = not self.pipeline
        self._head.clear()
        super().on_response_complete()
        if self._awaiting_head and not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _refuse_head(self) -> None:
        logger.info("refusing a request head over %d bytes from %s", self.head_limit, self.client)
        body = json.dumps({"error": {"type": "RequestHeaderFieldsTooLarge", "code": 431, "limit": self.head_limit,
                                     "message": f"the request head is over the {self.head_limit}-byte limit "
                                                "(max_header_bytes)"}}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        logger.info("closing a connection from %s: no complete request head in %gs", self.client, self.head_timeout)
        self.transport.close()


def protocol_with_head_limits(*, seconds: float, max_bytes: int) -> type[HeadDeadlineProtocol]:
    """The protocol class (uvicorn's ``http=``) with these head limits."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout": float(seconds),
                                                                 "head_limit": int(max_bytes)})
