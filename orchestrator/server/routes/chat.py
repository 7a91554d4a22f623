"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``.

Any OpenAI client or chat UI works unchanged. Models:

* ``orchestrator`` - the agent plans the request (HuggingGPT style), runs the tools
  and answers;
* ``orchestrator-chat`` - chat mode: the LLM answers with modality-signal spans
  (``<image>…</image>``), each dispatched to its decoder as soon as it closes;
* ``graph:<name>`` - a prebuilt graph, its inputs filled from the message (its text
  and media, in order).

Images come in as ``image_url`` content parts (``data:`` or http(s) URLs), audio as
``input_audio`` parts (base64 plus format). The answer's text links every generated
artifact (markdown: ``![image](…/v1/artifacts/sha256:…)``) and a structured
``artifacts`` list (on the message, on the response and on the last stream chunk)
lists them. Each completion is a run: the ``X-Run-Id`` header names it, so its
events and outputs stay available under ``/v1/runs``.

The client's ``messages`` are the history (``_history``: earlier turns, their media
and the artifacts earlier answers linked go into a session for this run); a
``session_id`` (body or ``X-Session-Id``) selects server-side memory when only one
user message is sent. ``modalities: ["text", "audio"]`` adds ``message.audio``.
Chat UIs' background prompts (titles, tags …) are answered as text without a run
(``_background``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import WorkflowInputError
from orchestrator.runs import Outcome, Step
from orchestrator.workflow import CompiledWorkflow

from .._background import answer as background_answer
from .._background import recognize as recognize_background
from .._errors import ApiError
from .._execute import fetch_pending
from .._formats import export_audio
from .._history import forget_session, parse_messages, seed_session, text_of
from .._inputs import check_url, decode_base64, resolve_input
from .._media import Call, call_tool, is_media_tool, media_models, pick_tool, tool_workflow
from .._runs import Executor, QueueFull, RunJob
from .._sse import EventStreamResponse
from .._state import ServerState, get_state
from ..schemas import ChatCompletionRequest, ChatMessage, InputValue
from .audio import speech_params
from .runs import check_prompt, ensure_capacity, submit_or_429

__all__ = ["link_for", "router"]

router = APIRouter(prefix="/v1", tags=["chat"])

AGENT_MODEL = "orchestrator"
CHAT_MODEL = "orchestrator-chat"
GRAPH_PREFIX = "graph:"
_REF = re.compile(r"\[(image|audio|music|speech|video|text|json|embedding|artifact): (sha256:[0-9a-f]{64})\]")
_DELTAS = ("answer_delta", "text_delta", "delta")


# ---------------------------------------------------------------------- models
@router.get("/models", summary="Models a chat client can choose")
async def models(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_model_list, state)}


@router.get("/models/{model_id:path}", summary="One model")
async def model(model_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    for entry in await asyncio.to_thread(_model_list, state):
        if entry["id"] == model_id:
            return entry
    raise ApiError(404, f"the model {model_id!r} does not exist", type="invalid_request_error", param="model",
                   code_name="model_not_found")


def _model_list(state: ServerState) -> list[dict[str, Any]]:
    created = 0
    out = [
        {"id": AGENT_MODEL, "object": "model", "created": created, "owned_by": "orchestrator",
         "description": f"plan with the agent ({state.agent.llm_name}), run the tools, answer with links to the media"},
        {"id": CHAT_MODEL, "object": "model", "created": created, "owned_by": "orchestrator",
         "description": "chat with modality-signal spans; media generated while the answer streams"},
    ]
    try:
        from graphs import list_graphs

        for g in list_graphs():
            out.append({"id": GRAPH_PREFIX + g.name, "object": "model", "created": created, "owned_by": "orchestrator",
                        "description": g.description})
    except Exception:  # noqa: BLE001 - the catalog of graphs is optional here
        pass
    return out + media_models(state)


# ---------------------------------------------------------------------- messages
async def _store_media(state: ServerState, values: list[InputValue]
                       ) -> tuple[dict[str, ArtifactRef], dict[str, InputValue]]:
    """Decode and store inline media now; http(s) URLs are fetched when the run starts."""
    refs: dict[str, ArtifactRef] = {}
    pending: dict[str, InputValue] = {}
    counters: dict[str, int] = {}
    for value in values:
        kind = value.modality or "image"
        if value.artifact_id is not None:  # a link to one of our artifacts: its own modality
            kind = (await asyncio.to_thread(resolve_input, "link", value, declared=None, store=state.store)).modality.value
        counters[kind] = counters.get(kind, 0) + 1
        name = f"{kind}{counters[kind]}"
        if value.url is not None and value.url.lower().startswith(("http://", "https://")):
            await asyncio.to_thread(check_url, name, value.url, core_settings=state.core)
            pending[name] = value
            continue
        if value.base64 is not None:
            decode_base64(value.base64, what=f"{kind} part")
        refs[name] = await asyncio.to_thread(
            resolve_input, name, value, declared=Modality(kind), store=state.store, core_settings=state.core,
            max_bytes=state.settings.max_upload_bytes,
        )
    return refs, pending


# ---------------------------------------------------------------------- answer text
def link_for(kind: str, url: str, name: str | None = None) -> str:
    """A markdown link to an artifact: inline image for images, a plain link otherwise."""
    label = name or kind
    return f"![{label}]({url})" if kind == "image" else f"[{label}]({url})"


class _RefRewriter:
    """Turns ``[image: sha256:…]`` refs in streamed text into markdown links, across chunks."""

    def __init__(self, url_for: Any) -> None:
        self.url_for = url_for
        self.buffer = ""
        self.seen: set[str] = set()

    def _sub(self, m: re.Match[str]) -> str:
        self.seen.add(m.group(2))
        return link_for("image" if m.group(1) == "image" else m.group(1), self.url_for(m.group(2)))

    def feed(self, text: str) -> str:
        self.buffer += text
        cut = self.buffer.rfind("[")
        if cut != -1 and "]" not in self.buffer[cut:] and len(self.buffer) - cut < 100:
            ready, self.buffer = self.buffer[:cut], self.buffer[cut:]
        else:
            ready, self.buffer = self.buffer, ""
        return _REF.sub(self._sub, ready)

    def flush(self) -> str:
        ready, self.buffer = self.buffer, ""
        return _REF.sub(self._sub, ready)


def _artifacts(state: ServerState, request: Request, outputs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, **state.artifact_view(request, ref)} for name, ref in outputs.items()]


def _tail_links(artifacts: list[dict[str, Any]], text: str, seen: set[str]) -> str:
    lines = [link_for(a["modality"], a["url"], a["name"]) for a in artifacts
             if a["id"] not in seen and a["id"] not in text and a["url"] not in text
             and a["modality"] not in ("text", "json")]  # text is in the answer itself
    if not lines:
        return ""
    return ("\n\n" if text.strip() else "") + "\n".join(lines)


def _failure_text(record: dict[str, Any]) -> str:
    error = record.get("error") or {}
    errors = record.get("errors") or {}
    reason = error.get("message") or "; ".join(f"{k}: {v}" for k, v in errors.items()) or record.get("status")
    return f"The request {record.get('status')}: {reason}"


_CLIENT_FAILURES = {"DownloadError": 422, "WorkflowInputError": 422, "ArtifactDecodeError": 422,
                    "ArtifactTooLarge": 413}
"""Run failures caused by what the client sent (a URL refused on a redirect, media that does not decode)."""


def _failure_status(record: dict[str, Any]) -> int:
    """The HTTP status of a completion whose run failed without an answer: the client's error, else 500."""
    return _CLIENT_FAILURES.get(str((record.get("error") or {}).get("type")), 500)


def _usage(messages: list[ChatMessage], answer: str) -> dict[str, int]:
    prompt = sum(len(text_of(m)) // 4 + 4 for m in messages)
    completion = len(answer) // 4 + 1 if answer else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ---------------------------------------------------------------------- executors
def _graph_inputs(compiled: Any, text: str, refs: dict[str, ArtifactRef], pending: dict[str, InputValue]
                  ) -> tuple[dict[str, ArtifactRef], dict[str, InputValue], list[tuple[str, Modality]]]:
    """Fill a graph's declared inputs from the message: text inputs get the text, media
    inputs get the message's media of their modality, in order."""
    media: dict[Modality, list[tuple[str, Any]]] = {}
    for name, value in [*refs.items(), *pending.items()]:
        kind = value.modality if isinstance(value, ArtifactRef) else Modality(value.modality or "image")
        media.setdefault(kind, []).append((name, value))
    out_refs: dict[str, ArtifactRef] = {}
    out_pending: dict[str, InputValue] = {}
    text_inputs: list[tuple[str, Modality]] = []
    missing = []
    for decl in compiled.workflow.inputs:
        modality = Modality(decl.modality)
        if modality is Modality.TEXT:
            if text.strip():
                text_inputs.append((decl.name, modality))
            elif not decl.optional:
                missing.append(f"{decl.name} (text)")
            continue
        queue = media.get(modality, [])
        if queue:
            _, value = queue.pop(0)
            if isinstance(value, ArtifactRef):
                out_refs[decl.name] = value
            else:
                out_pending[decl.name] = value
        elif not decl.optional:
            missing.append(f"{decl.name} ({modality.value})")
    if missing:
        raise WorkflowInputError(f"graph {compiled.name!r} needs " + ", ".join(missing) + " in the message")
    return out_refs, out_pending, text_inputs


def _graph_executor(state: ServerState, compiled: CompiledWorkflow, text: str, refs: dict[str, ArtifactRef],
                    pending: dict[str, InputValue], seed: int | None) -> Executor:
    declared = {i.name: Modality(i.modality) for i in compiled.workflow.inputs}
    graph_refs, graph_pending, text_inputs = _graph_inputs(compiled, text, refs, pending)

    async def execute(job: RunJob) -> AsyncIterator[Step]:
        inputs = dict(graph_refs)
        for name, _ in text_inputs:
            inputs[name] = await state.store.aput(text, modality=Modality.TEXT)
        inputs.update(await fetch_pending(state, job, graph_pending, declared))
        outcome = Outcome("failed", error={"type": "RunError", "message": "the workflow ended without a result"})
        async for step in state.service.workflow(compiled, inputs, run_id=job.id, cancel=job.cancel, seed=seed):
            if isinstance(step, Outcome):
                outcome = step
            else:
                yield step
        texts = [f"{name}: {state.store.load(ref)}" for name, ref in outcome.outputs.items()
                 if ref.modality is Modality.TEXT]
        outcome.answer = "\n".join(texts) if texts else f"{compiled.name} {outcome.status}."
        outcome.outputs = {k: v for k, v in outcome.outputs.items() if v.modality is not Modality.TEXT}
        yield outcome

    return execute


def _agent_executor(state: ServerState, mode: str, text: str, refs: dict[str, ArtifactRef],
                    pending: dict[str, InputValue], session_id: str | None, seed: int | None,
                    history: tuple[str, Any] | None = None) -> Executor:
    """Run the agent on the last user turn; ``history`` is a session seeded from the client's
    earlier messages (used instead of ``session_id``, removed when the run ends)."""
    async def execute(job: RunJob) -> AsyncIterator[Step]:
        sid = history[0] if history is not None else session_id
        try:
            inputs = dict(refs)
            inputs.update(await fetch_pending(state, job, pending, {}))
            if mode == "chat":
                stream = state.service.chat(text, inputs, run_id=job.id, cancel=job.cancel, session_id=sid,
                                            seed=seed)
            else:
                stream = state.service.prompt(text, inputs, run_id=job.id, cancel=job.cancel, session_id=sid,
                                              seed=seed)
            async for item in stream:
                yield item
        finally:
            if history is not None:
                await forget_session(history[1], history[0])

    return execute


# ---------------------------------------------------------------------- the endpoint
@router.post("/chat/completions", summary="OpenAI-compatible chat completions (streaming or not)")
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    x_session_id: str | None = Header(None, alias="X-Session-Id"),
    state: ServerState = Depends(get_state),
) -> Any:
    runs = state.runs
    model_name = body.model
    if not any(m.role == "user" for m in body.messages):
        raise ApiError(422, "messages need at least one user message", type="invalid_request_error", param="messages")
    background = recognize_background(body.messages)
    if background is not None and (model_name in (AGENT_MODEL, CHAT_MODEL)):
        state.metrics.chat_completions.labels("background", str(body.stream).lower()).inc()
        return _text_completion(background_answer(background), model_name, body)
    ensure_capacity(state)
    conversation = parse_messages(body.messages, max_media=state.settings.max_chat_media)
    text = conversation.text
    check_prompt(state, text, "last user message")
    refs, pending = await _store_media(state, conversation.media)
    if not text.strip() and not refs and not pending:
        raise ApiError(422, "the last user message is empty", type="invalid_request_error", param="messages")
    session_id = x_session_id or body.session_id
    history = None
    if model_name == AGENT_MODEL or model_name == CHAT_MODEL:
        mode = "chat" if model_name == CHAT_MODEL else "plan"
        history = await seed_session(state, conversation)
        executor = _agent_executor(state, mode, text, refs, pending, session_id, body.seed, history)
    elif model_name.startswith(GRAPH_PREFIX):
        compiled = await state.workflows.agraph(model_name[len(GRAPH_PREFIX):])
        executor = _graph_executor(state, compiled, text, refs, pending, body.seed)
    elif await asyncio.to_thread(is_media_tool, state, model_name):  # a media tool picked as the chat model
        compiled = await tool_workflow(state, model_name)
        executor = _graph_executor(state, compiled, text, refs, pending, body.seed)
    else:
        raise ApiError(404, f"the model {model_name!r} does not exist; see GET /v1/models",
                       type="invalid_request_error", param="model", code_name="model_not_found")
    try:
        job = await runs.submit("chat", executor, request={"model": model_name, "prompt": text[:2000]},
                                options={"session_id": session_id, "seed": body.seed, "stream": body.stream},
                                inputs=refs, spec={"final_event": True, "honours_cancel": model_name not in (AGENT_MODEL, CHAT_MODEL)})
    except QueueFull as exc:
        if history is not None:
            await forget_session(history[1], history[0])
        raise submit_or_429(exc) from exc
    state.metrics.chat_completions.labels(model_name if model_name in (AGENT_MODEL, CHAT_MODEL) else "graph",
                                          str(body.stream).lower()).inc()
    completion_id = f"chatcmpl-{job.id}"
    created = int(time.time())
    headers = {"X-Run-Id": job.id}
    spoken = _audio_request(state, body)
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return EventStreamResponse(
            _stream(state, request, job.id, completion_id, created, model_name, body.messages, include_usage, spoken),
            headers=headers,
        )
    record = await runs.wait(job.id)
    assert record is not None
    doc = _completion(state, request, record, completion_id, created, model_name, body.messages)
    if spoken is not None and "choices" in doc:
        message = doc["choices"][0]["message"]
        message["audio"] = await spoken.answer(state, record, message["content"], job.id)
    return JSONResponse(doc, status_code=200 if record.get("answer") or record["status"] in ("succeeded", "partial")
                        else _failure_status(record),
                        headers=headers)


def _text_completion(text: str, model_name: str, body: ChatCompletionRequest) -> Any:
    """A completion with a fixed text and no run (background prompts of chat UIs)."""
    completion_id = f"chatcmpl-bg{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    usage = _usage(body.messages, text)
    if not body.stream:
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
            "system_fingerprint": None, "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}],
        }, headers={"X-Background-Task": "1"})

    def chunks() -> Iterator[str]:
        for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
            doc = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            yield f"data: {json.dumps(doc)}\n\n"
        if (body.stream_options or {}).get("include_usage"):
            yield f"data: {json.dumps({'id': completion_id, 'object': 'chat.completion.chunk', 'created': created, 'model': model_name, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return EventStreamResponse(chunks(), headers={"X-Background-Task": "1"})


_SPOKEN_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus", "pcm16": "pcm", "aac": "aac"}
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


class _Spoken:
    """``modalities: ["text", "audio"]``: the answer as ``message.audio`` (OpenAI's shape).

    The run's own audio output is used when it made one (the user asked for speech);
    otherwise the answer text is read aloud by the text-to-speech tool.
    """

    def __init__(self, fmt: str, voice: str | None) -> None:
        self.fmt, self.voice = fmt, voice

    async def answer(self, state: ServerState, record: dict[str, Any], content: str, run_id: str) -> dict[str, Any]:
        transcript = _MARKDOWN_LINK.sub(lambda m: m.group(1), content or "").strip()
        audio_ref = next((ArtifactRef.model_validate(v) for v in (record.get("outputs") or {}).values()
                          if isinstance(v, dict) and v.get("modality") == "audio"), None)
        if audio_ref is None:
            tool = pick_tool(state, "/v1/audio/speech", None)
            params = speech_params(state, tool, self.voice, 1.0)
            results, _ = await call_tool(state, path="/v1/audio/speech", tool=tool,
                                         calls=[Call({"text": transcript or "(no answer)"}, params)], outputs=["audio"])
            audio_ref = results[0]["audio"]
        audio = await state.store.aload(audio_ref)
        data, _ = await asyncio.to_thread(export_audio, audio, _SPOKEN_FORMATS[self.fmt])
        return {"id": f"audio_{run_id}", "data": base64.b64encode(data).decode(), "transcript": transcript,
                "expires_at": int(time.time()) + state.settings.signed_url_ttl_seconds, "artifact_id": audio_ref.id}


def _audio_request(state: ServerState, body: ChatCompletionRequest) -> _Spoken | None:
    """The spoken-answer request, checked (400 for an unknown format); None when not asked."""
    if "audio" not in (body.modalities or []):
        return None
    spec = body.audio or {}
    fmt = str(spec.get("format") or "wav").lower()
    if fmt not in _SPOKEN_FORMATS:
        raise ApiError(400, f"audio.format {fmt!r} is not supported; use one of {sorted(_SPOKEN_FORMATS)}",
                       type="invalid_request_error", param="audio.format")
    voice = spec.get("voice")
    return _Spoken(fmt, str(voice) if voice else None)


def _completion(state: ServerState, request: Request, record: dict[str, Any], completion_id: str, created: int,
                model_name: str, messages: list[ChatMessage]) -> dict[str, Any]:
    if record["status"] not in ("succeeded", "partial") and not record.get("answer"):
        error = record.get("error") or {}
        return {"error": {"message": _failure_text(record), "type": error.get("type", "run_failed"),
                          "code": _failure_status(record), "run_id": record["id"]}}
    rewriter = _RefRewriter(lambda aid: state.artifact_url(request, aid))
    answer = rewriter.feed(record.get("answer") or "") + rewriter.flush()
    artifacts = _artifacts(state, request, record.get("outputs") or {})
    answer += _tail_links(artifacts, answer, rewriter.seen)
    if record["status"] == "partial":
        answer += "\n\n(Some steps failed: " + "; ".join(f"{k}: {v}" for k, v in record.get("errors", {}).items()) + ")"
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "artifacts": artifacts},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(messages, answer),
        "artifacts": artifacts,
        "run_id": record["id"],
    }


async def _stream(state: ServerState, request: Request, run_id: str, completion_id: str, created: int,
                  model_name: str, messages: list[ChatMessage], include_usage: bool,
                  spoken: _Spoken | None = None) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        doc = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
               "system_fingerprint": None, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                        "logprobs": None}], **extra}
        return f"data: {json.dumps(doc, separators=(',', ':'))}\n\n"

    rewriter = _RefRewriter(lambda aid: state.artifact_url(request, aid))
    sent: list[str] = []
    yield chunk({"role": "assistant", "content": ""})
    async for item in state.runs.follow(run_id):
        if item is None:
            yield ": keep-alive\n\n"
            continue
        seq, doc = item
        if seq is None:  # the store failed mid-stream: say so, end the stream cleanly
            error = {**doc["error"], "code": 503, "run_id": run_id}
            yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"
            return
        kind = doc.get("type")
        piece = ""
        if kind in _DELTAS and isinstance(doc.get("delta", doc.get("text")), str):
            piece = rewriter.feed(doc.get("delta", doc.get("text")))
        elif kind == "span_finished" and doc.get("error") and not doc.get("ref"):
            piece = rewriter.feed(f"[{doc.get('kind', 'media')} failed: {doc['error']}]")
        elif kind not in ("run_finished", "run_failed") and isinstance(doc.get("ref"), dict) and "id" in doc["ref"]:
            ref = doc["ref"]
            if ref["id"] not in rewriter.seen:
                rewriter.seen.add(ref["id"])
                piece = rewriter.feed("") + "\n" + link_for(ref.get("modality", "artifact"),
                                                           state.artifact_url(request, ref["id"])) + "\n"
        if piece:
            sent.append(piece)
            yield chunk({"content": piece})
    record = await state.runs.get(run_id) or {"status": "failed", "id": run_id}
    streamed = "".join(sent)
    rest = rewriter.flush()
    if not streamed.strip() and record.get("answer"):
        rest += rewriter.feed(record["answer"]) + rewriter.flush()
    if record.get("status") not in ("succeeded", "partial") and not (streamed + rest).strip():
        error = record.get("error") or {}
        doc = {"error": {"message": _failure_text(record), "type": error.get("type", "run_failed"),
                         "code": _failure_status(record),
                         "run_id": run_id}}
        yield f"data: {json.dumps(doc)}\n\n"
        yield "data: [DONE]\n\n"
        return
    artifacts = _artifacts(state, request, record.get("outputs") or {})
    rest += _tail_links(artifacts, streamed + rest, rewriter.seen)
    if record.get("status") == "partial":
        rest += "\n\n(Some steps failed: " + "; ".join(f"{k}: {v}" for k, v in record.get("errors", {}).items()) + ")"
    elif record.get("status") not in ("succeeded", "partial"):
        rest += "\n\n(" + _failure_text(record) + ")"
    if rest:
        sent.append(rest)
        yield chunk({"content": rest})
    if spoken is not None:
        try:
            yield chunk({"audio": await spoken.answer(state, record, "".join(sent), run_id)})
        except ApiError as exc:
            yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.type, 'code': exc.status}})}\n\n"
    yield chunk({}, "stop", artifacts=artifacts, run_id=run_id)
    if include_usage:
        doc = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
               "choices": [], "usage": _usage(messages, "".join(sent))}
        yield f"data: {json.dumps(doc)}\n\n"
    yield "data: [DONE]\n\n"
