"""LLM clients: one small interface, three implementations.

* :class:`OpenAICompatClient` speaks the OpenAI chat-completions protocol over httpx
  (OpenAI, vLLM, Ollama, llama.cpp's server …): streaming (SSE) and not, JSON
  output, tool calls, timeouts, retries with backoff on 429 and 5xx.
* :class:`TransformersChatClient` runs a local chat checkpoint (anything with a chat template).
* :class:`ScriptedLLM` answers from a script (tests, demos).
* The offline heuristic planner (:mod:`orchestrator.agent.heuristic`) is a client too.

Every client has the same four calls::

    reply = llm.chat(messages)                         # LLMReply(text=..., tool_calls=[...])
    for piece in llm.chat(messages, stream=True): ...  # text deltas
    reply = await llm.achat(messages)
    async for piece in llm.achat(messages, stream=True): ...

``context`` is structured information the agent graph already has (the stage,
the request, the resources …). Network and local models ignore it; the
heuristic planner uses it instead of parsing prose back out of the prompt.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as _json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import httpx

from orchestrator.errors import ConfigError, LLMError, LLMResponseError, LLMUnavailable

__all__ = [
    "ChatOptions",
    "LLMClient",
    "LLMReply",
    "Message",
    "OpenAICompatClient",
    "ScriptedLLM",
    "ToolCall",
    "TransformersChatClient",
    "make_llm",
]

logger = logging.getLogger("orchestrator.agent.llm")

Message = dict[str, Any]
"""An OpenAI-style chat message: ``{"role": "user", "content": "..."}``."""


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for (``arguments`` already decoded)."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass
class LLMReply:
    """A complete (non-streamed) answer."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None

    def json(self) -> Any:
        """The text parsed as JSON (code fences and prose around it are tolerated)."""
        return loads_lenient(self.text)


@dataclass(frozen=True)
class ChatOptions:
    """Per-call options; clients use what their backend supports."""

    json: bool = False
    tools: Sequence[Mapping[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: Sequence[str] | None = None
    seed: int | None = None
    context: Mapping[str, Any] | None = None


class LLMClient:
    """Base class of every LLM client.

    A subclass implements at least one of ``_chat`` / ``_stream`` (sync); the
    async twins run them in a thread unless overridden with native async code.
    """

    name: str = "llm"

    # ------------------------------------------------------------ public API
    @overload
    def chat(self, messages: Sequence[Message], *, stream: Literal[False] = ..., json: bool = ...,
             tools: Sequence[Mapping[str, Any]] | None = ..., **options: Any) -> LLMReply: ...

    @overload
    def chat(self, messages: Sequence[Message], *, stream: Literal[True], json: bool = ...,
             tools: Sequence[Mapping[str, Any]] | None = ..., **options: Any) -> Iterator[str]: ...

    def chat(self, messages: Sequence[Message], *, stream: bool = False, json: bool = False,
             tools: Sequence[Mapping[str, Any]] | None = None, **options: Any) -> LLMReply | Iterator[str]:
        """Answer ``messages``; with ``stream=True`` return an iterator of text deltas."""
        opts = _options(json, tools, options)
        msgs = _check_messages(messages)
        if stream:
            if tools:
                raise LLMError("tool calls need stream=False")
            return self._stream(msgs, opts)
        return self._chat(msgs, opts)

    @overload
    def achat(self, messages: Sequence[Message], *, stream: Literal[False] = ..., json: bool = ...,
              tools: Sequence[Mapping[str, Any]] | None = ..., **options: Any) -> Awaitable[LLMReply]: ...

    @overload
    def achat(self, messages: Sequence[Message], *, stream: Literal[True], json: bool = ...,
              tools: Sequence[Mapping[str, Any]] | None = ..., **options: Any) -> AsyncIterator[str]: ...

    def achat(self, messages: Sequence[Message], *, stream: bool = False, json: bool = False,
              tools: Sequence[Mapping[str, Any]] | None = None,
              **options: Any) -> Awaitable[LLMReply] | AsyncIterator[str]:
        """Async twin of :meth:`chat`: ``await llm.achat(m)`` or ``async for d in llm.achat(m, stream=True)``."""
        opts = _options(json, tools, options)
        msgs = _check_messages(messages)
        if stream:
            if tools:
                raise LLMError("tool calls need stream=False")
            return self._astream(msgs, opts)
        return self._achat(msgs, opts)

    def close(self) -> None:
        """Release connections or models."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ for subclasses
    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        if type(self)._stream is LLMClient._stream:
            raise NotImplementedError(f"{type(self).__name__} must implement _chat() or _stream()")
        return LLMReply(text="".join(self._stream(messages, opts)), finish_reason="stop")

    def _stream(self, messages: list[Message], opts: ChatOptions) -> Iterator[str]:
        if type(self)._chat is LLMClient._chat:
            raise NotImplementedError(f"{type(self).__name__} must implement _chat() or _stream()")
        reply = self._chat(messages, opts)
        if reply.text:
            yield reply.text

    async def _achat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        return await asyncio.to_thread(self._chat, messages, opts)

    async def _astream(self, messages: list[Message], opts: ChatOptions) -> AsyncIterator[str]:
        async for piece in _thread_stream(lambda stop: self._stream_stoppable(messages, opts, stop)):
            yield piece

    def _stream_stoppable(self, messages: list[Message], opts: ChatOptions, stop: threading.Event) -> Iterator[str]:
        """``_stream`` that a consumer can stop early (override to stop generation itself)."""
        for piece in self._stream(messages, opts):
            if stop.is_set():
                return
            yield piece


def _options(json: bool, tools: Sequence[Mapping[str, Any]] | None, options: Mapping[str, Any]) -> ChatOptions:
    unknown = set(options) - {"temperature", "max_tokens", "stop", "seed", "context"}
    if unknown:
        raise TypeError(f"unknown chat option(s): {sorted(unknown)}")
    return ChatOptions(json=json, tools=tools, **options)


def _check_messages(messages: Sequence[Message]) -> list[Message]:
    msgs = list(messages)
    if not msgs:
        raise LLMError("chat needs at least one message")
    for i, m in enumerate(msgs):
        if not isinstance(m, Mapping) or "role" not in m:
            raise LLMError(f"message {i} is not a {{'role', 'content'}} mapping")
    return [dict(m) for m in msgs]


async def _thread_stream(make: Callable[[threading.Event], Iterator[str]]) -> AsyncIterator[str]:
    """Drive a blocking generator in a thread and yield its items asynchronously."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in make(stop):
                loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    thread = threading.Thread(target=work, name="llm-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


# ====================================================================== JSON helpers
def loads_lenient(text: str) -> Any:
    """Parse JSON that an LLM wrote: code fences and prose around it are tolerated."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    try:
        return _json.loads(s)
    except ValueError:
        pass
    starts = [i for i in (s.find("{"), s.find("[")) if i >= 0]
    if not starts:
        raise LLMResponseError("the answer is not JSON", excerpt=text[:200])
    start = min(starts)
    decoder = _json.JSONDecoder()
    try:
        value, _ = decoder.raw_decode(s[start:])
        return value
    except ValueError as exc:
        raise LLMResponseError(f"the answer is not valid JSON: {exc}", excerpt=text[:200]) from exc


# ====================================================================== OpenAI-compatible
_DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
}


class OpenAICompatClient(LLMClient):
    """Chat completions over HTTP against any OpenAI-compatible server.

    >>> llm = OpenAICompatClient("qwen2.5:7b", base_url="http://127.0.0.1:11434/v1")  # doctest: +SKIP
    >>> llm.chat([{"role": "user", "content": "hi"}]).text                              # doctest: +SKIP

    ``base_url`` is the API root that ``/chat/completions`` is appended to (it
    usually ends in ``/v1``). Retries: connection errors, timeouts, 429 (honouring
    ``Retry-After``) and 5xx are retried ``max_retries`` times with exponential
    backoff; a stream is retried only while nothing has been yielded yet.
    ``json_mode``: ``"auto"`` sends ``response_format={"type": "json_object"}``
    and, if the server rejects it with a 400, retries once without it and
    remembers; ``"response_format"`` always sends it; ``"prompt"`` never does.

    Known server differences handled: SSE with or without ``data: [DONE]``,
    ``data:`` with or without a space, ``: keep-alive`` comments, a final usage
    chunk with empty ``choices``, ``finish_reason`` on the last content chunk or
    on an empty one after it, chunks without ``id``/``created``/``object``,
    ``content: null`` deltas, ``reasoning_content`` (kept out of the text), tool
    call ``arguments`` as a JSON string or an object, ``{"error": ...}`` bodies
    with status 200 or inside the stream.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = _DEFAULT_BASES["openai"],
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        json_mode: Literal["auto", "response_format", "prompt"] = "auto",
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not model:
            raise ConfigError("OpenAICompatClient needs a model name")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.json_mode = json_mode
        self._json_supported: bool | None = None if json_mode == "auto" else json_mode == "response_format"
        hdrs = {"Accept": "application/json", **(headers or {})}
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._headers = hdrs
        self._transport = transport
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatClient({self.model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------ connections
    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout, headers=self._headers, transport=self._transport)
            return self._client

    @property
    def aclient(self) -> httpx.AsyncClient:
        # an AsyncClient is bound to the event loop that first used it
        loop = asyncio.get_running_loop()
        if self._aclient is None or getattr(self, "_aclient_loop", None) is not loop:
            self._aclient = httpx.AsyncClient(timeout=self._timeout, headers=self._headers,
                                              transport=self._async_transport)
            self._aclient_loop = loop
        return self._aclient

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        self.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    # ------------------------------------------------------------ request body
    def _body(self, messages: list[Message], opts: ChatOptions, *, stream: bool, use_json: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        for key in ("temperature", "max_tokens", "seed"):
            value = getattr(opts, key)
            if value is not None:
                body[key] = value
        if opts.stop:
            body["stop"] = list(opts.stop)
        if opts.tools:
            body["tools"] = [dict(t) for t in opts.tools]
        if use_json:
            body["response_format"] = {"type": "json_object"}
        return body

    def _use_json(self, opts: ChatOptions) -> bool:
        return bool(opts.json) and self._json_supported is not False

    # ------------------------------------------------------------ retry policy
    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            hinted = _retry_after(response)
            if hinted is not None:
                return min(hinted, self.max_backoff)
        base = self.backoff * (2 ** attempt)
        return min(base * (1 + 0.1 * random.random()), self.max_backoff)

    def _classify(self, response: httpx.Response, opts: ChatOptions) -> Literal["ok", "retry", "no_json"]:
        status = response.status_code
        if status < 400:
            return "ok"
        if status == 429 or status >= 500:
            return "retry"
        if status in (400, 422) and opts.json and self._json_supported is None:
            return "no_json"
        return "ok"

    def _fail_status(self, response: httpx.Response) -> LLMError:
        status = response.status_code
        detail = _error_detail(response)
        if status == 429 or status >= 500:
            return LLMUnavailable(f"LLM server answered {status} after {self.max_retries} retries: {detail}",
                                  status=status, url=self.url)
        if status in (401, 403):
            return LLMResponseError(f"LLM server refused the credentials ({status}): {detail}", status=status,
                                    url=self.url)
        if status == 404:
            return LLMResponseError(f"not found ({status}): {detail} - check the base URL and the model name "
                                    f"{self.model!r}", status=status, url=self.url)
        return LLMResponseError(f"LLM server rejected the request ({status}): {detail}", status=status, url=self.url)

    def _unreachable(self, exc: Exception) -> LLMUnavailable:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "cannot be reached"
        return LLMUnavailable(f"LLM server at {self.base_url} {kind} after {self.max_retries} retries: "
                              f"{type(exc).__name__}: {exc}", url=self.url)

    # ------------------------------------------------------------ non-streaming
    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        attempt = 0
        while True:
            use_json = self._use_json(opts)
            body = self._body(messages, opts, stream=False, use_json=use_json)
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TransportError as exc:
                time.sleep(self._transport_delay(exc, attempt))
                attempt += 1
                continue
            action = self._next_step(response, opts, use_json, attempt)
            if action == "again":
                continue
            if action == "retry":
                time.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            return _parse_completion(response)

    async def _achat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        attempt = 0
        while True:
            use_json = self._use_json(opts)
            body = self._body(messages, opts, stream=False, use_json=use_json)
            try:
                response = await self.aclient.post(self.url, json=body)
            except httpx.TransportError as exc:
                await asyncio.sleep(self._transport_delay(exc, attempt))
                attempt += 1
                continue
            action = self._next_step(response, opts, use_json, attempt)
            if action == "again":
                continue
            if action == "retry":
                await asyncio.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            return _parse_completion(response)

    def _next_step(self, response: httpx.Response, opts: ChatOptions, use_json: bool,
                   attempt: int) -> Literal["use", "retry", "again"]:
        """What the sync and async request loops do with an answer (shared policy).

        ``"again"``: ask again at once without ``response_format``; ``"retry"``:
        retry after a backoff; ``"use"``: read the answer. A final error status raises.
        """
        verdict = self._classify(response, opts)
        if verdict == "no_json" and use_json:
            self._reject_json(response)
            return "again"
        if verdict == "retry" and attempt < self.max_retries:
            return "retry"
        if response.status_code >= 400:
            raise self._fail_status(response)
        if use_json:
            self._json_supported = True
        return "use"

    def _transport_delay(self, exc: httpx.TransportError, attempt: int, *, yielded: bool = False) -> float:
        """Backoff before retrying after a connection error, or raise when no retry is left."""
        if yielded:
            raise LLMUnavailable(f"the LLM stream broke off: {type(exc).__name__}: {exc}", url=self.url) from exc
        if attempt >= self.max_retries:
            raise self._unreachable(exc) from exc
        return self._delay(attempt, None)

    def _reject_json(self, response: httpx.Response) -> None:
        logger.info("server rejected response_format (%s: %s); asking for JSON in the prompt only",
                    response.status_code, _error_detail(response))
        self._json_supported = False

    # ------------------------------------------------------------ streaming
    def _stream(self, messages: list[Message], opts: ChatOptions) -> Iterator[str]:
        return self._stream_stoppable(messages, opts, threading.Event())

    def _stream_stoppable(self, messages: list[Message], opts: ChatOptions, stop: threading.Event) -> Iterator[str]:
        attempt = 0
        while True:
            use_json = self._use_json(opts)
            body = self._body(messages, opts, stream=True, use_json=use_json)
            yielded = False
            try:
                with self.client.stream("POST", self.url, json=body,
                                        headers={"Accept": "text/event-stream"}) as response:
                    if response.status_code >= 400:
                        response.read()
                    action = self._next_step(response, opts, use_json, attempt)
                    if action == "again":
                        continue
                    if action == "use":
                        decoder = _SSEDecoder()
                        for line in response.iter_lines():
                            for piece in decoder.feed_line(line):
                                yielded = True
                                yield piece
                            if decoder.done or stop.is_set():
                                break
                        else:
                            for piece in decoder.finish():
                                yielded = True
                                yield piece
                        return
                    delay = self._delay(attempt, response)
            except httpx.TransportError as exc:
                delay = self._transport_delay(exc, attempt, yielded=yielded)
            time.sleep(delay)
            attempt += 1

    async def _astream(self, messages: list[Message], opts: ChatOptions) -> AsyncIterator[str]:
        attempt = 0
        while True:
            use_json = self._use_json(opts)
            body = self._body(messages, opts, stream=True, use_json=use_json)
            yielded = False
            try:
                async with self.aclient.stream("POST", self.url, json=body,
                                               headers={"Accept": "text/event-stream"}) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    action = self._next_step(response, opts, use_json, attempt)
                    if action == "again":
                        continue
                    if action == "use":
                        decoder = _SSEDecoder()
                        async for line in response.aiter_lines():
                            for piece in decoder.feed_line(line):
                                yielded = True
                                yield piece
                            if decoder.done:
                                break
                        else:
                            for piece in decoder.finish():
                                yielded = True
                                yield piece
                        return
                    delay = self._delay(attempt, response)
            except httpx.TransportError as exc:
                delay = self._transport_delay(exc, attempt, yielded=yielded)
            await asyncio.sleep(delay)
            attempt += 1


class _SSEDecoder:
    """Server-sent events -> text deltas of chat-completion chunks."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self.done = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed_line(self, line: str) -> list[str]:
        line = line.rstrip("\r")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return []  # comment / keep-alive
        fieldname, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if fieldname != "data":
            return []  # event:, id:, retry: carry nothing we need
        out: list[str] = []
        if self._data and _complete_json("\n".join(self._data)):
            out = self._dispatch()  # a server that does not separate events with blank lines
        self._data.append(value)
        if value.strip() == "[DONE]":
            out += self._dispatch()
        return out

    def finish(self) -> list[str]:
        return self._dispatch()

    def _dispatch(self) -> list[str]:
        if not self._data:
            return []
        payload = "\n".join(self._data).strip()
        self._data = []
        if payload == "[DONE]":
            self.done = True
            return []
        try:
            chunk = _json.loads(payload)
        except ValueError as exc:
            raise LLMResponseError(f"the LLM stream sent a chunk that is not JSON: {payload[:120]!r}") from exc
        if not isinstance(chunk, dict):
            raise LLMResponseError(f"the LLM stream sent an unexpected chunk: {payload[:120]!r}")
        if "error" in chunk and not chunk.get("choices"):
            raise LLMResponseError(f"the LLM server reported an error mid-stream: {_error_text(chunk['error'])}")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out


def _complete_json(text: str) -> bool:
    text = text.strip()
    if text == "[DONE]":
        return True
    try:
        _json.loads(text)
        return True
    except ValueError:
        return False


def _parse_completion(response: httpx.Response) -> LLMReply:
    try:
        doc = response.json()
    except ValueError as exc:
        raise LLMResponseError(f"the LLM server answered something that is not JSON: {response.text[:120]!r}",
                               status=response.status_code) from exc
    if not isinstance(doc, dict):
        raise LLMResponseError("the LLM server answered an unexpected JSON value", status=response.status_code)
    if doc.get("error") and not doc.get("choices"):
        raise LLMResponseError(f"the LLM server reported an error: {_error_text(doc['error'])}",
                               status=response.status_code)
    choices = doc.get("choices") or []
    if not choices:
        raise LLMResponseError("the LLM server answered with no choices", status=response.status_code)
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = _json.loads(args) if args.strip() else {}
            except ValueError as exc:
                raise LLMResponseError(f"tool call {fn.get('name')!r} has arguments that are not JSON: "
                                       f"{args[:120]!r}") from exc
        calls.append(ToolCall(name=fn.get("name", ""), arguments=dict(args), id=call.get("id")))
    return LLMReply(text=text, tool_calls=calls, finish_reason=choice.get("finish_reason"),
                    usage=doc.get("usage"), model=doc.get("model"))


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err.get("error") or err)
    return str(err)


def _error_detail(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(doc, dict) and "error" in doc:
        return _error_text(doc["error"])[:300]
    if isinstance(doc, dict) and "detail" in doc:
        return str(doc["detail"])[:300]
    return str(doc)[:200]


def _retry_after(response: httpx.Response) -> float | None:
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ====================================================================== transformers
class TransformersChatClient(LLMClient):
    """A local chat model run with transformers (any checkpoint with a chat template).

    The model loads on first use (``from_pretrained(id_or_path)``), once. ``json``
    is requested in the prompt only (no constrained decoding); ``tools`` are
    passed to the chat template, and tool calls are not parsed back out.
    """

    name = "transformers"

    def __init__(self, model: str | Path, *, device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int = 512, temperature: float = 0.0) -> None:
        self.model_id = str(model)
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersChatClient({self.model_id!r})"

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                try:
                    import torch
                    from transformers import AutoModelForCausalLM, AutoTokenizer
                except ImportError as exc:  # pragma: no cover - transformers is a dependency
                    raise LLMUnavailable(f"transformers is not installed: {exc}") from exc
                try:
                    tokenizer = AutoTokenizer.from_pretrained(self.model_id)
                    kwargs: dict[str, Any] = {}
                    if self.dtype:
                        kwargs["dtype"] = getattr(torch, self.dtype)
                    model = AutoModelForCausalLM.from_pretrained(self.model_id, **kwargs)
                except (OSError, ValueError) as exc:
                    raise LLMUnavailable(f"cannot load chat model {self.model_id!r}: {exc}", model=self.model_id) from exc
                if getattr(tokenizer, "chat_template", None) is None:
                    raise LLMUnavailable(f"{self.model_id!r} has no chat template", model=self.model_id)
                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                self._model = model.to(device).eval()
                self._tokenizer = tokenizer
            return self._model, self._tokenizer

    def _inputs(self, messages: list[Message], opts: ChatOptions) -> tuple[Any, Any, dict[str, Any]]:
        model, tok = self._load()
        msgs = [{"role": m["role"], "content": _text_content(m.get("content"))} for m in messages]
        if opts.json:
            if msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": msgs[0]["content"] + "\n\nAnswer with JSON only."}
            else:
                msgs.insert(0, {"role": "system", "content": "Answer with JSON only."})
        try:
            enc = tok.apply_chat_template(msgs, tools=list(opts.tools) if opts.tools else None,
                                          add_generation_prompt=True, return_tensors="pt", return_dict=True)
        except Exception as exc:  # noqa: BLE001 - template errors come in many types
            raise LLMResponseError(f"the chat template of {self.model_id!r} failed: {exc}", model=self.model_id) from exc
        enc = {k: v.to(model.device) for k, v in enc.items()}
        temperature = self.temperature if opts.temperature is None else opts.temperature
        gen: dict[str, Any] = {
            "max_new_tokens": opts.max_tokens or self.max_new_tokens,
            "do_sample": temperature > 0,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if temperature > 0:
            gen["temperature"] = temperature
        if opts.seed is not None:
            import torch

            torch.manual_seed(opts.seed)
        return model, tok, {**enc, **gen}

    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        import torch

        model, tok, kwargs = self._inputs(messages, opts)
        with self._generate_lock, torch.inference_mode():
            out = model.generate(**kwargs)
        prompt_len = kwargs["input_ids"].shape[1]
        new = out[0, prompt_len:]
        text = tok.decode(new, skip_special_tokens=True)
        text = _cut_stop(text, opts.stop)
        finish = "length" if new.shape[0] >= kwargs["max_new_tokens"] else "stop"
        return LLMReply(text=text, finish_reason=finish, model=self.model_id,
                        usage={"prompt_tokens": int(prompt_len), "completion_tokens": int(new.shape[0])})

    def _stream(self, messages: list[Message], opts: ChatOptions) -> Iterator[str]:
        return self._stream_stoppable(messages, opts, threading.Event())

    def _stream_stoppable(self, messages: list[Message], opts: ChatOptions, stop: threading.Event) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        model, tok, kwargs = self._inputs(messages, opts)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=300)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._generate_lock, torch.inference_mode():
                    model.generate(**kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop()]))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="llm-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
                if stop.is_set():
                    break
        finally:
            stop.set()
            thread.join(timeout=60)
        if errors:
            raise LLMResponseError(f"generation failed: {errors[0]}", model=self.model_id) from errors[0]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None


def _text_content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _cut_stop(text: str, stop: Sequence[str] | None) -> str:
    for s in stop or ():
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text


# ====================================================================== scripted
Script = str | Callable[[list[Message], ChatOptions], str | LLMReply] | LLMReply | BaseException


class ScriptedLLM(LLMClient):
    """Answers from a script, in order: each entry is a string, an :class:`LLMReply`,
    an exception to raise, or a callable ``(messages, options) -> str | LLMReply``.

    Streams split the text into ``chunk_chars``-sized pieces with ``delay``
    seconds between them. ``calls`` records every ``(messages, options)``.

    >>> llm = ScriptedLLM(["first", "second"])
    >>> llm.chat([{"role": "user", "content": "x"}]).text
    'first'
    """

    name = "scripted"

    def __init__(self, script: Sequence[Script] | Script, *, chunk_chars: int = 8, delay: float = 0.0,
                 repeat_last: bool = False) -> None:
        self.script = list(script) if isinstance(script, (list, tuple)) else [script]
        self.chunk_chars = chunk_chars
        self.delay = delay
        self.repeat_last = repeat_last
        self.calls: list[tuple[list[Message], ChatOptions]] = []
        self._lock = threading.Lock()

    def _next(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        with self._lock:
            self.calls.append((messages, opts))
            if not self.script:
                raise LLMResponseError("the scripted LLM has no reply left")
            entry = self.script[0] if (self.repeat_last and len(self.script) == 1) else self.script.pop(0)
        if isinstance(entry, BaseException):
            raise entry
        if callable(entry):
            entry = entry(messages, opts)
        return entry if isinstance(entry, LLMReply) else LLMReply(text=str(entry), finish_reason="stop")

    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        return self._next(messages, opts)

    def _stream(self, messages: list[Message], opts: ChatOptions) -> Iterator[str]:
        text = self._next(messages, opts).text
        for i in range(0, len(text), self.chunk_chars):
            if self.delay and i:
                time.sleep(self.delay)
            yield text[i:i + self.chunk_chars]

    async def _achat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        return self._next(messages, opts)

    async def _astream(self, messages: list[Message], opts: ChatOptions) -> AsyncIterator[str]:
        text = self._next(messages, opts).text
        for i in range(0, len(text), self.chunk_chars):
            if self.delay and i:
                await asyncio.sleep(self.delay)
            yield text[i:i + self.chunk_chars]


# ====================================================================== factory
def make_llm(spec: str | None = None, settings: Any = None, *, registry: Any = None) -> LLMClient:
    """Build the client a spec names (the ``--llm`` flag / ``ORCHESTRATOR_LLM``).

    * ``"heuristic"`` (default): the offline planner, no network, no model.
    * ``"openai:<model>"``, ``"openai:<model>@<base_url>"``: any OpenAI-compatible
      server; ``vllm:``, ``ollama:`` and ``llamacpp:`` are the same client with
      that server's usual local base URL as default. The base URL otherwise comes
      from ``settings.llm_base_url``, the key from ``settings.llm_api_key`` or
      ``OPENAI_API_KEY``; with no model, ``settings.llm_model``.
    * ``"transformers:<path-or-id>"``: a local chat model; a name of the model
      zoo (e.g. ``tiny-chat``) resolves to its local path.
    """
    import os

    if settings is None:
        from orchestrator.settings import get_settings

        settings = get_settings()
    spec = (spec or getattr(settings, "llm", None) or "heuristic").strip()
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind == "heuristic":
        from orchestrator.agent.heuristic import HeuristicPlanner

        return HeuristicPlanner(registry=registry)
    if kind in _DEFAULT_BASES:
        model, _, base = rest.partition("@")
        model = model or getattr(settings, "llm_model", None) or ""
        base = base or getattr(settings, "llm_base_url", None) or _DEFAULT_BASES[kind]
        if not model:
            raise ConfigError(f"LLM spec {spec!r} names no model: use '{kind}:<model>[@<base_url>]'")
        key = getattr(settings, "llm_api_key", None) or (os.environ.get("OPENAI_API_KEY") if kind == "openai" else None)
        return OpenAICompatClient(model, base_url=base, api_key=key)
    if kind == "transformers":
        target = rest or getattr(settings, "llm_model", None)
        if not target:
            raise ConfigError("LLM spec 'transformers:' names no model: use 'transformers:<path-or-id>'")
        return TransformersChatClient(_resolve_local_model(target), device=getattr(settings, "device", None))
    raise ConfigError(
        f"unknown LLM spec {spec!r}: use 'heuristic', 'openai:<model>[@<base_url>]', 'vllm:…', 'ollama:…', "
        "'llamacpp:…' or 'transformers:<path-or-id>'"
    )


def _resolve_local_model(target: str) -> str:
    if Path(target).expanduser().exists():
        return str(Path(target).expanduser())
    try:
        from orchestrator.runtime import zoo_path  # type: ignore[attr-defined]
    except ImportError:
        return target
    try:
        path = zoo_path(target)
    except Exception:  # noqa: BLE001 - not a zoo name: a hub id then
        return target
    return str(path) if path else target
