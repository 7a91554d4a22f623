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


async def test_the_head_waits_for_the_first_chunk_and_goes_in_the_same_turn() -> None:
    """Nothing is sent before the body's first chunk; then the head and that chunk are sent in one turn of
    the loop (the server's transport writes them to the socket together)."""
    loop = asyncio.get_running_loop()
    first = asyncio.Event()
    sent: list[dict[str, Any]] = []
    sent_by_end_of_turn: list[int] = []

    async def events() -> AsyncIterator[str]:
        await first.wait()
        yield sse_format(1, "hello", {"n": 1})

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            loop.call_soon(lambda: sent_by_end_of_turn.append(len(sent)))
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "asgi": {"spec_version": "2.3"}}
    task = asyncio.ensure_future(EventStreamResponse(events())(scope, receive, send))
    await asyncio.sleep(0.1)
    assert sent == []  # no head alone while the first chunk is awaited
    first.set()
    await asyncio.wait_for(task, 5)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body", "http.response.body"]
    assert sent_by_end_of_turn[0] >= 2  # the head and the first chunk in the same turn
