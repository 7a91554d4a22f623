"""Event streams: sent by the request's task, ended at once when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from orchestrator.server._sse import EventStreamResponse, sse_format


async def test_a_client_that_goes_away_ends_the_stream_and_releases_its_source() -> None:
    released = asyncio.Event()
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def events() -> AsyncIterator[str]:
        try:
            yield sse_format(1, "hello", {"n": 1})
            await asyncio.sleep(3600)  # a run that emits nothing more for a long time
            yield sse_format(2, "never", {})
        finally:
            released.set()

    async def receive() -> dict[str, Any]:
        if not gone.is_set():
            gone.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.05)  # then the client disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "asgi": {"spec_version": "2.3"}}
    await asyncio.wait_for(EventStreamResponse(events())(scope, receive, send), 5)
    assert released.is_set()
    headers = sent[0]["headers"]
    assert sent[0]["type"] == "http.response.start"
    assert (b"content-type", b"text/event-stream; charset=utf-8") in headers
    assert (b"cache-control", b"no-cache") in headers
    assert [m["body"] for m in sent[1:]] == [b'id: 1\nevent: hello\ndata: {"n":1}\n\n']


async def test_a_stream_that_ends_sends_every_event_then_ends_the_body() -> None:
    sent: list[dict[str, Any]] = []

    async def events() -> AsyncIterator[str]:
        for i in range(3):
            yield sse_format(i + 1, "tick", {"i": i})

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "asgi": {"spec_version": "2.3"}}
    await asyncio.wait_for(EventStreamResponse(events())(scope, receive, send), 5)
    bodies = [m.get("body", b"") for m in sent[1:]]
    assert bodies[:3] == [sse_format(i + 1, "tick", {"i": i}).encode() for i in range(3)]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
