"""``/v1/runs``: start runs (prompt, prebuilt graph or workflow document), read, cancel, stream events."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import OrchestratorError, WorkflowInputError

from .._errors import ApiError
from .._execute import agent_executor, workflow_executor
from .._inputs import check_url, resolve_input
from .._runs import TERMINAL, QueueFull, RunJob
from .._sse import EventStreamResponse, sse_format
from .._state import ServerState, get_state
from ..schemas import InputValue, RunRequest, RunView

__all__ = ["check_prompt", "ensure_capacity", "router", "sse_format", "submit_or_429"]

router = APIRouter(prefix="/v1/runs", tags=["runs"])


def _as_value(value: str | InputValue) -> InputValue:
    if isinstance(value, InputValue):
        return value
    return InputValue(artifact_id=value) if value.startswith("sha256:") else InputValue(text=value)


@dataclass
class RequestInputs:
    """A run request's inputs: those stored when it is accepted (``refs``) and the http(s) URLs its
    run fetches (``pending``). The executor holds both; :meth:`resolve` fills them in."""

    refs: dict[str, ArtifactRef] = field(default_factory=dict)
    pending: dict[str, InputValue] = field(default_factory=dict)

    def resolve(self, state: ServerState, raw: dict[str, str | InputValue],
                declared: dict[str, Modality] | None) -> dict[str, ArtifactRef]:
        """Validate and store the inputs now, leaving http(s) URLs (checked) for the run; returns the
        stored ones. Blocking: the run manager calls it in the hand-off that stores the run's record."""
        for name, value in raw.items():
            value = _as_value(value)
            if value.url is not None and value.url.lower().startswith(("http://", "https://")):
                check_url(name, value.url, core_settings=state.core)
                self.pending[name] = value
                continue
            hint = declared.get(name) if declared is not None else None
            self.refs[name] = resolve_input(name, value, declared=hint, store=state.store, core_settings=state.core,
                                            max_bytes=state.settings.max_upload_bytes)
        return self.refs


def _check_names(raw: dict[str, Any], declared: dict[str, tuple[Modality, bool]], workflow: str) -> None:
    problems = []
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        problems.append(f"unknown input(s) {unknown}; {workflow!r} takes {sorted(declared)}")
    missing = sorted(n for n, (_, optional) in declared.items() if not optional and n not in raw)
    if missing:
        problems.append("missing input(s) " + ", ".join(f"{n!r} ({declared[n][0].value})" for n in missing))
    if problems:
        raise WorkflowInputError("; ".join(problems), workflow=workflow)


def check_prompt(state: ServerState, text: str, where: str) -> None:
    """413 for a prompt over ``max_prompt_chars`` (it would plan and start work in proportion)."""
    limit = state.settings.max_prompt_chars
    if len(text) > limit:
        raise ApiError(413, f"the {where} is {len(text)} characters, over the limit max_prompt_chars={limit}",
                       type="PromptTooLong", limit=limit, param=where)


def submit_or_429(exc: QueueFull) -> ApiError:
    return ApiError(429, exc.message, type="QueueFull", headers={"Retry-After": str(exc.retry_after)},
                    retry_after=exc.retry_after)


def ensure_capacity(state: ServerState) -> None:
    """429 now, before inputs are decoded and stored, when the run would be refused anyway."""
    try:
        state.runs.ensure_capacity()
    except QueueFull as exc:
        raise submit_or_429(exc) from exc


@router.post("", status_code=202, response_model=RunView, summary="Start a run")
async def create_run(body: RunRequest, request: Request, state: ServerState = Depends(get_state)) -> JSONResponse:
    """Start a run of a prompt (the agent plans it), a prebuilt graph, or a workflow document.

    Answers 202 with the run (``status: queued``); follow it with ``GET /v1/runs/{id}``
    or its events. 429 with ``Retry-After`` when the run queue is full.
    """
    ensure_capacity(state)
    options = body.options
    inputs = RequestInputs()
    hints: dict[str, Modality] | None = None
    if body.prompt is not None:
        check_prompt(state, body.prompt, "prompt")
        executor = agent_executor(state, body.prompt, inputs.refs, inputs.pending, options)
        kind, req = "prompt", {"prompt": body.prompt}
        spec = {"final_event": True, "honours_cancel": False}
    else:
        if body.graph is not None:
            compiled = await state.workflows.agraph(body.graph)
            kind, req = "graph", {"graph": body.graph}
        else:
            assert body.workflow is not None
            compiled = await state.workflows.adocument(body.workflow)
            kind, req = "workflow", {"workflow": compiled.name}
        declared = {i.name: (Modality(i.modality), i.optional) for i in compiled.workflow.inputs}
        _check_names(body.inputs, declared, compiled.name)
        hints = {n: m for n, (m, _) in declared.items()}
        executor = workflow_executor(state, compiled, inputs.refs, inputs.pending, options)
        spec = {"node_tools": {n.id: n.tool for n in compiled.workflow.nodes}}
    req["executor"] = state.core.executor  # where its node calls run: local or ray (docs/ray.md)
    try:
        job: RunJob = await state.runs.submit(  # the inputs are stored in the same thread hand-off as the record
            kind, executor, request=req, options=options.model_dump(mode="json"), spec=spec,
            prepare=functools.partial(inputs.resolve, state, body.inputs, hints),
        )
    except QueueFull as exc:
        raise submit_or_429(exc) from exc
    view = state.run_view(request, job.record.to_json())
    return JSONResponse(view, status_code=202, headers={"Location": f"/v1/runs/{job.id}"})


@router.get("", summary="Recent runs")
async def list_runs(request: Request, limit: int = Query(50, ge=1, le=500), status: str | None = None,
                    state: ServerState = Depends(get_state)) -> dict[str, Any]:
    records = await state.runs.list(limit=limit, status=status)
    return {"runs": [state.run_view(request, r) for r in records]}


async def _record(state: ServerState, run_id: str) -> dict[str, Any]:
    if not run_id.isalnum() or len(run_id) > 64:
        raise ApiError(404, f"no run {run_id[:80]!r}", type="RunNotFound", run_id=run_id[:80])
    record = await state.runs.get(run_id)
    if record is None:
        raise ApiError(404, f"no run {run_id!r} (never started, or expired)", type="RunNotFound", run_id=run_id)
    return record


@router.get("/{run_id}", response_model=RunView, summary="A run's status, outputs and errors")
async def get_run(run_id: str, request: Request, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return state.run_view(request, await _record(state, run_id))


@router.delete("/{run_id}", response_model=RunView, summary="Cancel a run")
async def cancel_run(run_id: str, request: Request, state: ServerState = Depends(get_state)) -> JSONResponse:
    """Cancel a queued or running run. Answers 409 if it had already ended."""
    record = await _record(state, run_id)
    if record.get("status") in TERMINAL:
        raise ApiError(409, f"run {run_id} already ended ({record['status']})", type="RunFinished",
                       run_id=run_id, run_status=record["status"])
    record = await state.runs.cancel(run_id) or record
    return JSONResponse(state.run_view(request, record), status_code=202 if record["status"] not in TERMINAL else 200)


_MAX_EVENT_ID = 1 << 62  # past the end of any log; keeps store indexes in range


def _resume_after(last_event_id: str | None, after: int | None) -> int:
    """The event id to resume after: ``Last-Event-ID`` (a non-negative integer), else ``?after=``.
    Ids past the end of the log are fine (nothing is replayed)."""
    if last_event_id is None or not last_event_id.strip():
        return min(after or 0, _MAX_EVENT_ID)
    raw = last_event_id.strip()
    if not (raw.isascii() and raw.isdigit()):
        raise ApiError(400, f"Last-Event-ID must be a non-negative integer event id, got {raw[:40]!r}",
                       type="BadRequest")
    return _MAX_EVENT_ID if len(raw) > 18 else min(int(raw), _MAX_EVENT_ID)


@router.get("/{run_id}/events", summary="The run's events (SSE, resumable)",
            responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}})
async def run_events(
    run_id: str,
    request: Request,
    after: int | None = Query(None, ge=0, description="start after this event id (like Last-Event-ID)"),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
    state: ServerState = Depends(get_state),
) -> Any:
    """Stream the run's events as Server-Sent Events, in order: ``id`` is the event's
    sequence number, ``event`` its type, ``data`` the event as JSON. Reconnecting with
    ``Last-Event-ID`` (or ``?after=``) resumes after that event. When the run has
    ended and every event was sent, an ``end`` event (no id) carries the final status
    and the stream closes. With ``Accept: application/json`` the events so far come
    back as one JSON list instead."""
    if state.runs.local(run_id) is None:  # a run of this process needs no record to say it exists
        await _record(state, run_id)
    start = _resume_after(last_event_id, after)
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/event-stream" not in accept:
        from .._runs import event_stream

        items = await asyncio.to_thread(state.store.read_events, event_stream(run_id), start)
        return JSONResponse({"events": [{"id": seq, **doc} for seq, doc in items]})

    async def stream() -> AsyncIterator[str]:
        head = "retry: 1000\n\n"  # with the response head and the first events (or a keep-alive soon): one write
        wait = state.settings.event_head_wait_seconds
        async for batch in state.runs.follow_batches(run_id, start, first_idle=wait):
            if batch is None:
                yield head + ": keep-alive\n\n"
                head = ""
                continue
            text = [head]
            head = ""
            for seq, doc in batch:
                if seq is None:  # the store failed; the stream ends cleanly, EventSource reconnects with Last-Event-ID
                    yield "".join([*text, sse_format(None, "error", {"run_id": run_id, **doc["error"]})])
                    return
                text.append(sse_format(seq, str(doc.get("type", "message")), doc))
            yield "".join(text)
        try:
            final = await state.runs.get(run_id) or {}
        except OrchestratorError:
            yield head + sse_format(None, "error", {"run_id": run_id, "type": "StoreUnavailable",
                                                    "message": "the store is unavailable; reconnect to resume"})
            return
        yield head + sse_format(None, "end", {"run_id": run_id, "status": final.get("status"),
                                              "last_event_id": final.get("last_event_id")})

    return EventStreamResponse(stream())
