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
events and outputs stay available under ``/v1/runs``. Server-side chat memory is
selected by ``session_id`` (or ``user``, or the ``X-Session-Id`` header).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import WorkflowInputError

from .._errors import ApiError
from .._execute import fetch_pending, outcome_from_engine
from .._inputs import check_url, decode_base64, resolve_input
from .._runs import QueueFull, RunJob
from .._state import ServerState, get_state
from ..schemas import ChatCompletionRequest, ChatMessage, InputValue
from .runs import check_prompt, ensure_capacity, submit_or_429

__all__ = ["link_for", "router"]

router = APIRouter(prefix="/v1", tags=["chat"])

AGENT_MODEL = "orchestrator"
CHAT_MODEL = "orchestrator-chat"
GRAPH_PREFIX = "graph:"
_REF = re.compile(r"\[(image|audio|music|speech|video|text|json|embedding|artifact): (sha256:[0-9a-f]{64})\]")
_DELTAS = ("answer_delta", "text_delta", "delta")
_AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "webm", "m4a", "aac", "opus", "pcm16"}


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
    return out


# ---------------------------------------------------------------------- messages
def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}]
    return list(message.content)


def _text_of(message: ChatMessage) -> str:
    return "\n".join(str(p.get("text", "")) for p in _parts(message) if p.get("type") in ("text", "input_text"))


def _media_values(message: ChatMessage, limit: int) -> list[InputValue]:
    """The media parts of a message as input values (images and audio)."""
    values: list[InputValue] = []
    for part in _parts(message):
        kind = part.get("type")
        if kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            if not isinstance(url, str) or not url:
                raise WorkflowInputError("an image_url part needs image_url.url")
            values.append(InputValue(url=url, modality="image"))
        elif kind == "input_audio":
            spec = part.get("input_audio") or {}
            data, fmt = spec.get("data"), str(spec.get("format", "wav")).lower()
            if not isinstance(data, str) or not data:
                raise WorkflowInputError("an input_audio part needs input_audio.data (base64)")
            if fmt not in _AUDIO_FORMATS:
                raise WorkflowInputError(f"input_audio format {fmt!r} is not supported; use one of {sorted(_AUDIO_FORMATS)}")
            values.append(InputValue(base64=data, modality="audio"))
        elif kind in ("text", "input_text", None):
            continue
        else:
            raise WorkflowInputError(f"content part type {kind!r} is not supported (text, image_url, input_audio)")
    if len(values) > limit:
        raise WorkflowInputError(f"{len(values)} media parts in one message; the limit is {limit}")
    return values


async def _store_media(state: ServerState, values: list[InputValue]
                       ) -> tuple[dict[str, ArtifactRef], dict[str, InputValue]]:
    """Decode and store inline media now; http(s) URLs are fetched when the run starts."""
    refs: dict[str, ArtifactRef] = {}
    pending: dict[str, InputValue] = {}
    counters: dict[str, int] = {}
    for value in values:
        kind = value.modality or "image"
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
    prompt = sum(len(_text_of(m)) // 4 + 4 for m in messages)
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


def _graph_executor(state: ServerState, compiled: Any, text: str, refs: dict[str, ArtifactRef],
                    pending: dict[str, InputValue], seed: int | None) -> Any:
    declared = {i.name: Modality(i.modality) for i in compiled.workflow.inputs}
    graph_refs, graph_pending, text_inputs = _graph_inputs(compiled, text, refs, pending)

    async def execute(job: RunJob) -> AsyncIterator[Any]:
        inputs: dict[str, Any] = dict(graph_refs)
        for name, _ in text_inputs:
            inputs[name] = await state.store.aput(text, modality=Modality.TEXT)
        inputs.update(await fetch_pending(state, job, graph_pending, declared))
        final = None
        async for event in compiled.astream(inputs, store=state.store, seed=seed, run_id=job.id, cancel=job.cancel):
            if event.type in ("run_finished", "run_failed"):
                final = event
            yield event
        outcome = outcome_from_engine(final)
        texts = [f"{name}: {state.store.load(ref)}" for name, ref in outcome.outputs.items()
                 if ref.modality is Modality.TEXT]
        outcome.answer = "\n".join(texts) if texts else f"{compiled.name} {outcome.status}."
        outcome.outputs = {k: v for k, v in outcome.outputs.items() if v.modality is not Modality.TEXT}
        yield outcome

    return execute


def _agent_executor(state: ServerState, mode: str, text: str, refs: dict[str, ArtifactRef],
                    pending: dict[str, InputValue], session_id: str | None, seed: int | None) -> Any:
    async def execute(job: RunJob) -> AsyncIterator[Any]:
        inputs = dict(refs)
        inputs.update(await fetch_pending(state, job, pending, {}))
        if mode == "chat":
            stream = state.agent.chat(text, media=inputs, run_id=job.id, cancel=job.cancel,
                                      session_id=session_id, seed=seed)
        else:
            stream = state.agent.run(text, inputs=inputs, run_id=job.id, cancel=job.cancel, session_id=session_id,
                                     seed=seed)
        async for item in stream:
            yield item

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
    ensure_capacity(state)
    user_messages = [m for m in body.messages if m.role == "user"]
    if not user_messages:
        raise ApiError(422, "messages need at least one user message", type="invalid_request_error", param="messages")
    last = user_messages[-1]
    text = _text_of(last)
    check_prompt(state, text, "last user message")
    refs, pending = await _store_media(state, _media_values(last, state.settings.max_chat_media))
    if not text.strip() and not refs and not pending:
        raise ApiError(422, "the last user message is empty", type="invalid_request_error", param="messages")
    session_id = x_session_id or body.session_id or body.user
    model_name = body.model
    if model_name == AGENT_MODEL or model_name == CHAT_MODEL:
        mode = "chat" if model_name == CHAT_MODEL else "plan"
        executor = _agent_executor(state, mode, text, refs, pending, session_id, body.seed)
    elif model_name.startswith(GRAPH_PREFIX):
        compiled = await asyncio.to_thread(state.workflows.graph, model_name[len(GRAPH_PREFIX):])
        executor = _graph_executor(state, compiled, text, refs, pending, body.seed)
    else:
        raise ApiError(404, f"the model {model_name!r} does not exist; see GET /v1/models",
                       type="invalid_request_error", param="model", code_name="model_not_found")
    try:
        job = await runs.submit("chat", executor, request={"model": model_name, "prompt": text[:2000]},
                                options={"session_id": session_id, "seed": body.seed, "stream": body.stream},
                                inputs=refs, spec={"final_event": True, "honours_cancel": model_name.startswith(GRAPH_PREFIX)})
    except QueueFull as exc:
        raise submit_or_429(exc) from exc
    state.metrics.chat_completions.labels(model_name if not model_name.startswith(GRAPH_PREFIX) else "graph",
                                          str(body.stream).lower()).inc()
    completion_id = f"chatcmpl-{job.id}"
    created = int(time.time())
    headers = {"X-Run-Id": job.id}
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            _stream(state, request, job.id, completion_id, created, model_name, body.messages, include_usage),
            media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    record = await runs.wait(job.id)
    assert record is not None
    return JSONResponse(_completion(state, request, record, completion_id, created, model_name, body.messages),
                        status_code=200 if record.get("answer") or record["status"] in ("succeeded", "partial")
                        else _failure_status(record),
                        headers=headers)


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
                  model_name: str, messages: list[ChatMessage], include_usage: bool) -> AsyncIterator[str]:
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
        _, doc = item
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
    yield chunk({}, "stop", artifacts=artifacts, run_id=run_id)
    if include_usage:
        doc = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
               "choices": [], "usage": _usage(messages, "".join(sent))}
        yield f"data: {json.dumps(doc)}\n\n"
    yield "data: [DONE]\n\n"
