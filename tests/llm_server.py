"""A scripted OpenAI-compatible chat server on loopback, for tests and benchmarks.

It is a real HTTP server (``http.server`` in a thread) so the real client, its
SSE parsing, retries and timeouts are exercised. Replies come from a script, in
order; each entry is a string, a :class:`Reply`, or a callable taking the request
body and returning one of those.

``flavor`` imitates the known differences between servers:

=========  ===================================================================
openai     ``id``/``created``/``system_fingerprint``; a first role-only chunk;
           ``finish_reason`` on an empty last chunk; a usage chunk with empty
           ``choices`` when ``stream_options.include_usage``; ``data: [DONE]``;
           chunked transfer encoding.
vllm       ``finish_reason`` on the last content chunk; always a usage chunk
           with empty ``choices``; ``reasoning_content`` deltas before the text.
ollama     ``finish_reason`` on a final ``{"role", "content": ""}`` chunk;
           404 ``{"error": {"message": ...}}`` for an unknown model.
llamacpp   no ``id``/``created``/``object``; ``content: null`` deltas;
           ``timings`` in the last chunk; no ``data: [DONE]``; the body ends
           when the connection closes; rejects ``response_format`` with 400
           when ``reject_response_format``.
bare       ``data:`` without a space, ``\r\n`` line ends, ``: keep-alive``
           comments, no ``[DONE]``, connection-close body.
=========  ===================================================================
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FLAVORS", "Reply", "ScriptedLLMServer"]

FLAVORS = ("openai", "vllm", "ollama", "llamacpp", "bare")


@dataclass
class Reply:
    """One scripted answer.

    ``status`` other than 200 sends ``body`` (default: an OpenAI error object)
    with ``headers`` (e.g. ``{"Retry-After": "0"}``). ``drop_after`` closes the
    connection after that many content chunks (a stream broken mid-way).
    ``delay`` (seconds between chunks) and ``chunk_chars`` override the server's.
    ``stream_error`` sends ``data: {"error": ...}`` after the content.
    """

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    tool_calls: list[dict[str, Any]] | None = None
    delay: float | None = None
    chunk_chars: int | None = None
    drop_after: int | None = None
    stream_error: str | None = None
    chunks: list[str] | None = None
    """Exact content pieces to stream (overrides ``chunk_chars`` splitting)."""
    hang: float | None = None
    """Seconds to wait before answering at all (a server that hangs)."""
    trickle: float | None = None
    """Send a non-streamed answer one byte at a time, this many seconds apart (a trickling server)."""


Entry = str | Reply | Callable[[dict[str, Any]], "str | Reply"]


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid-stream (a cancelled request) is normal here, not an error to print."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class ScriptedLLMServer:
    """``with ScriptedLLMServer(["hi"]) as srv: OpenAICompatClient("m", base_url=srv.base_url)``."""

    def __init__(self, script: list[Entry] | None = None, *, flavor: str = "openai", chunk_chars: int = 8,
                 delay: float = 0.0, reject_response_format: bool = False, known_models: set[str] | None = None,
                 repeat_last: bool = False) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}")
        self.script: list[Entry] = list(script or [])
        self.flavor = flavor
        self.chunk_chars = chunk_chars
        self.delay = delay
        self.reject_response_format = reject_response_format
        self.known_models = known_models
        self.repeat_last = repeat_last
        self.requests: list[dict[str, Any]] = []
        self.sent: list[tuple[float, str]] = []
        """(perf_counter time, content piece) for every streamed piece, in order."""
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> ScriptedLLMServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *entries: Entry) -> None:
        with self._lock:
            self.script.extend(entries)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if not self.script:
                return Reply(status=500, body={"error": {"message": "script exhausted"}})
            entry = self.script[0] if (self.repeat_last and len(self.script) == 1) else self.script.pop(0)
        if callable(entry) and not isinstance(entry, Reply):
            entry = entry(body)
        return entry if isinstance(entry, Reply) else Reply(text=str(entry))


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # ------------------------------------------------------------ plumbing
    def _send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        srv = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": {"message": "body is not JSON"}})
            return
        if srv.known_models is not None and body.get("model") not in srv.known_models:
            srv.requests.append(body)
            self._send_json(404, {"error": {"message": f'model "{body.get("model")}" not found, try pulling it first',
                                            "type": "api_error"}})
            return
        if srv.reject_response_format and "response_format" in body:
            srv.requests.append(body)
            self._send_json(400, {"error": {"message": "response_format is not supported", "code": 400}})
            return
        reply = srv._next(body)
        if reply.hang:
            time.sleep(reply.hang)
        if reply.status != 200:
            doc = reply.body if reply.body is not None else {"error": {"message": f"scripted {reply.status}"}}
            self._send_json(reply.status, doc, reply.headers)
            return
        if body.get("stream"):
            self._stream(body, reply)
        else:
            self._complete(body, reply)

    # ------------------------------------------------------------ non-streaming
    def _complete(self, body: dict[str, Any], reply: Reply) -> None:
        flavor = self.owner.flavor
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message["content"] = None if flavor != "ollama" else ""
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": c["name"],
                              "arguments": c["arguments"] if flavor == "ollama" else json.dumps(c["arguments"])}}
                for i, c in enumerate(reply.tool_calls)
            ]
        doc: dict[str, Any] = {
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "model": body.get("model"),
            "usage": {"prompt_tokens": 10, "completion_tokens": len(reply.text.split()), "total_tokens": 0},
        }
        if flavor != "llamacpp":
            doc.update(id=f"chatcmpl-{uuid.uuid4().hex[:12]}", object="chat.completion", created=int(time.time()))
        if reply.trickle:
            self._trickle(doc, reply.trickle)
            return
        self._send_json(200, doc, reply.headers)

    def _trickle(self, doc: Any, pause: float) -> None:
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ------------------------------------------------------------ streaming
    def _stream(self, body: dict[str, Any], reply: Reply) -> None:
        srv, flavor = self.owner, self.owner.flavor
        chunked = flavor in ("openai", "vllm", "ollama")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

        def write(data: str) -> None:
            raw = data.encode()
            if chunked:
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            else:
                self.wfile.write(raw)
            self.wfile.flush()

        sep = "\r\n\r\n" if flavor == "bare" else "\n\n"
        prefix = "data:" if flavor == "bare" else "data: "
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            doc: dict[str, Any] = {"choices": choices, "model": body.get("model"), **extra}
            if flavor != "llamacpp":
                doc.update(id=cid, object="chat.completion.chunk", created=created)
            if flavor == "openai":
                doc["system_fingerprint"] = "fp_scripted"
            write(prefix + json.dumps(doc) + sep)

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            c: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if flavor == "vllm":
                c.update(logprobs=None, stop_reason=None)
            return [c]

        chunk_chars = reply.chunk_chars or srv.chunk_chars
        delay = srv.delay if reply.delay is None else reply.delay
        pieces = reply.chunks if reply.chunks is not None else [
            reply.text[i:i + chunk_chars] for i in range(0, len(reply.text), chunk_chars)
        ]
        try:
            if flavor in ("openai", "vllm"):
                event(choice({"role": "assistant", "content": ""}))
            if flavor == "vllm":
                event(choice({"reasoning_content": "thinking..."}))
            if flavor == "llamacpp":
                event(choice({"role": "assistant", "content": None}))
            if flavor == "bare":
                write(": keep-alive\n")
            for i, piece in enumerate(pieces):
                if reply.drop_after is not None and i >= reply.drop_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if i and delay:
                    time.sleep(delay)
                last = i == len(pieces) - 1
                srv.sent.append((time.perf_counter(), piece))
                event(choice({"content": piece}, "stop" if (flavor == "vllm" and last) else None))
            if reply.stream_error:
                write(prefix + json.dumps({"error": {"message": reply.stream_error}}) + sep)
            if flavor == "openai":
                event(choice({}, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    event([], usage={"prompt_tokens": 10, "completion_tokens": len(pieces)})
            elif flavor == "vllm":
                event([], usage={"prompt_tokens": 10, "completion_tokens": len(pieces)})
            elif flavor == "ollama":
                event(choice({"role": "assistant", "content": ""}, "stop"))
            elif flavor == "llamacpp":
                event(choice({}, "stop"), timings={"predicted_n": len(pieces)})
            else:
                event(choice({}, "stop"))
            if flavor in ("openai", "vllm", "ollama"):
                write(prefix + "[DONE]" + sep)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
