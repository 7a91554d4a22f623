"""Server-Sent Events: one event's text, and the streamed response that carries them.

:class:`EventStreamResponse` sends its body from the request's own task. Starlette's
``StreamingResponse`` runs the body in an anyio task group beside a second task that waits
for the client to go away: two tasks, a cancel scope and their bookkeeping for every
stream, which for a light run costs about as much as the run's own events. Here one small
watcher task waits for the disconnect and cancels the request's task, so a stream whose
client went away still stops at once (its follower is released), as before.
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
            await self.stream_response(send)
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
