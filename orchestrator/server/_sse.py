"""Server-Sent Events: one event's text, and the streamed response that carries them.

:class:`EventStreamResponse` sends its body from the request's own task. Starlette's
``StreamingResponse`` runs the body in an anyio task group beside a second task that waits
for the client to go away: two tasks, a cancel scope and their bookkeeping for every
stream, which for a light run costs about as much as the run's own events. Here one small
watcher task waits for the disconnect and cancels the request's task, so a stream whose
client went away still stops at once (its follower is released), as before. The response head
waits for the body's first chunk, so both go in one write (the server's transport sends what one
turn of the loop wrote together): a stream's generator should yield soon, a keep-alive if nothing else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import ContentStream, StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["EventStreamResponse", "sse_format"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Headers of every event stream: not cached, not buffered by a proxy in front."""


def sse_format(seq: int | None, event: str, data: Any) -> str:
    """One Server-Sent Event."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response sent by the request's task; a client that disconnects ends it.

    >>> async def events():                                   # doctest: +SKIP
    ...     yield sse_format(1, "hello", {"x": 1})
    >>> return EventStreamResponse(events())                  # doctest: +SKIP
    """

    media_type = "text/event-stream"

    def __init__(self, content: ContentStream, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content, headers={**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        sending = True

        async def cancel_on_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if sending:
                task.cancel()

        watcher = asyncio.ensure_future(cancel_on_disconnect())
        try:
            await self._stream_with_head(send)
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # cancelled from elsewhere (shutdown), not by the client leaving
            task.uncancel()  # the client went away: the stream just ends
        finally:
            sending = False
            watcher.cancel()
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()  # release the follower now, not when the generator is collected
        if self.background is not None:
            await self.background()

    async def _stream_with_head(self, send: Send) -> None:
        """:meth:`stream_response`, the head sent with the first chunk."""
        chunks = aiter(self.body_iterator)
        first = await anext(chunks, None)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if first is not None:
            await send({"type": "http.response.body", "body": _bytes(first, self.charset), "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": _bytes(chunk, self.charset), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _bytes(chunk: str | bytes | memoryview, charset: str) -> bytes | memoryview:
    return chunk.encode(charset) if isinstance(chunk, str) else chunk
