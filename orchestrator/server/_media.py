"""What OpenAI's media endpoints run: one registered tool per call, as a run on the engine.

Each endpoint (``/v1/images/generations``, ``/v1/audio/speech`` …) names a task; the
profile (then the registry) picks the tool that serves it. A call becomes a one-node
workflow submitted to the run manager, so it obeys the run limits, shows up under
``/v1/runs`` with its events, and hits the node cache like any other run.

``model`` in a request is one of the tool names ``/v1/models`` lists for the
endpoint, or one of OpenAI's model names (``dall-e-3``, ``tts-1``, ``whisper-1``,
``text-embedding-3-small`` …), which mean "the profile's choice", so chat UIs that
send those names work unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import OrchestratorError, ToolNotFound
from orchestrator.workflow import Workflow

from ._errors import ApiError
from ._execute import workflow_executor
from ._runs import QueueFull
from ._state import ServerState
from .schemas import RunOptions

__all__ = ["ENDPOINTS", "Call", "Endpoint", "call_tool", "is_media_tool", "media_models", "pick_tool", "tool_workflow",
           "validate_params"]

logger = logging.getLogger("orchestrator.server.media")


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI media endpoint: the task it runs and the OpenAI model names it accepts."""

    path: str
    task: str
    aliases: tuple[str, ...]


ENDPOINTS: dict[str, Endpoint] = {e.path: e for e in (
    Endpoint("/v1/images/generations", "text-to-image", ("dall-e-2", "dall-e-3", "gpt-image-1")),
    Endpoint("/v1/images/edits", "image-to-image", ("dall-e-2", "gpt-image-1")),
    Endpoint("/v1/audio/speech", "text-to-speech", ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")),
    Endpoint("/v1/audio/transcriptions", "automatic-speech-recognition",
             ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")),
    Endpoint("/v1/embeddings", "feature-extraction",
             ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")),
    Endpoint("/v1/embeddings#image", "image-feature-extraction", ()),
)}


def _tools_for(state: ServerState, task: str) -> list[str]:
    """The registered tools serving ``task``: the profile's candidates first, then the registry's."""
    names: list[str] = []
    try:
        from orchestrator.runtime import get_profile

        profile = get_profile(state.core.profile, settings=state.core)
        names = [c.tool for c in profile.candidates(task) if c.tool]
    except OrchestratorError as exc:  # a broken profile: the registry still knows the tools
        logger.info("profile lookup for %s failed: %s", task, exc)
    registered = [t.spec.name for t in state.registry.find(task=task)]
    return list(dict.fromkeys(n for n in [*names, *registered] if n in registered))


def pick_tool(state: ServerState, path: str, model: str | None) -> str:
    """The tool that answers ``path`` for the requested ``model`` (404 / 400 when none)."""
    endpoint = ENDPOINTS[path]
    tools = _tools_for(state, endpoint.task)
    if not tools:
        raise ApiError(400, f"this server's profile serves no {endpoint.task!r} tool, so {path.split('#')[0]} "
                       "is not available", type="invalid_request_error", param="model", code_name="model_not_available")
    if model is None or model in endpoint.aliases or model in ("", "default"):
        return tools[0]
    if model in tools:
        return model
    raise ApiError(404, f"the model {model!r} does not exist for {path.split('#')[0]}; use one of "
                   f"{tools + list(endpoint.aliases)} (GET /v1/models)", type="invalid_request_error",
                   param="model", code_name="model_not_found")


def media_models(state: ServerState) -> list[dict[str, Any]]:
    """``/v1/models`` entries: each tool that serves a media endpoint, with the endpoints it serves."""
    served: dict[str, dict[str, Any]] = {}
    for path, endpoint in ENDPOINTS.items():
        for name in _tools_for(state, endpoint.task):
            entry = served.setdefault(name, {
                "id": name, "object": "model", "created": 0, "owned_by": "orchestrator",
                "description": state.registry.get(name).spec.description, "task": endpoint.task, "endpoints": [],
            })
            clean = path.split("#")[0]
            if clean not in entry["endpoints"]:
                entry["endpoints"].append(clean)
    return list(served.values())


def is_media_tool(state: ServerState, name: str) -> bool:
    """True when ``name`` is a tool ``/v1/models`` lists (a chat UI may pick it as its model)."""
    return any(name in _tools_for(state, e.task) for e in ENDPOINTS.values())


async def tool_workflow(state: ServerState, tool: str) -> Any:
    """A compiled one-node workflow of ``tool``: its input ports are the workflow's inputs, its
    required outputs the workflow's outputs (what a chat message with that model runs)."""
    spec = state.registry.get(tool).spec
    wf = Workflow(tool, f"the {tool} tool")
    for port in spec.inputs:
        wf.add_input(port.name, port.modality, optional=port.optional)
    wf.add_node("call", tool, inputs={p.name: p.name for p in spec.inputs})
    for port in spec.outputs:
        if not port.optional:
            wf.add_output(port.name, f"call.{port.name}")
    return await state.workflows.adocument(wf.to_dict())


def validate_params(state: ServerState, tool: str, params: dict[str, Any], *, param_of: dict[str, str]) -> None:
    """400 now, naming the OpenAI field, when the tool's params model refuses a value."""
    model: type[BaseModel] = state.registry.get(tool).spec.params
    try:
        model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        raise ApiError(400, f"{param_of.get(field, field) or 'request'}: {first['msg']}",
                       type="invalid_request_error", param=param_of.get(field, field) or None) from exc


@dataclass
class Call:
    """One call of the tool: its inputs (refs, or text to store) and params."""

    inputs: dict[str, ArtifactRef | str]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None


async def call_tool(state: ServerState, *, path: str, tool: str, calls: list[Call], outputs: list[str]
                    ) -> tuple[list[dict[str, ArtifactRef]], str]:
    """Run ``tool`` once per call (in one run, concurrently) and return each call's outputs and the run id.

    The run (kind ``workflow``; ``request.endpoint`` says which endpoint) is limited,
    recorded and observable like every other run. Raises :class:`ApiError`: 429 when
    the run queue is full, 500 when the tool failed, 504 after ``media_timeout_seconds``.
    """
    try:
        spec = state.registry.get(tool).spec
    except ToolNotFound as exc:
        raise ApiError(400, exc.message, type="invalid_request_error", param="model") from exc
    wf = Workflow(f"openai{path.split('#')[0].replace('/', '.')}")
    refs: dict[str, ArtifactRef] = {}
    for i, call in enumerate(calls):
        for port, value in call.inputs.items():
            decl = spec.input(port)
            modality = decl.modality if decl is not None else Modality.TEXT
            wf.add_input(f"{port}_{i}", modality)
            refs[f"{port}_{i}"] = value if isinstance(value, ArtifactRef) else await state.store.aput(
                value, modality=Modality.TEXT)
        wf.add_node(f"call{i}", tool, call.params, inputs={port: f"{port}_{i}" for port in call.inputs},
                    seed=call.seed)
        for name in outputs:
            wf.add_output(f"{name}_{i}", f"call{i}.{name}")
    compiled = await state.workflows.adocument(wf.to_dict())
    options = RunOptions()
    try:
        job = await state.runs.submit(
            "workflow", workflow_executor(state, compiled, refs, {}, options),
            request={"endpoint": path.split("#")[0], "tool": tool}, options=options.model_dump(mode="json"),
            inputs=refs, spec={"node_tools": {f"call{i}": tool for i in range(len(calls))}},
        )
    except QueueFull as exc:
        raise ApiError(429, exc.message, type="rate_limit_error", headers={"Retry-After": str(exc.retry_after)}) from exc
    try:
        record = await state.runs.wait(job.id, timeout=state.settings.media_timeout_seconds)
    except asyncio.TimeoutError as exc:
        await state.runs.cancel(job.id)
        raise ApiError(504, f"{tool} did not finish in {state.settings.media_timeout_seconds:g}s (run {job.id})",
                       type="timeout", run_id=job.id) from exc
    record = record or {}
    if record.get("status") != "succeeded":
        error = record.get("error") or {}
        message = error.get("message") or "; ".join(f"{k}: {v}" for k, v in (record.get("errors") or {}).items())
        raise ApiError(500, f"{tool} failed: {message or record.get('status', 'unknown')}", type="server_error",
                       run_id=job.id)
    found = record.get("outputs") or {}
    results: list[dict[str, ArtifactRef]] = []
    for i in range(len(calls)):
        results.append({name: _ref(found[f"{name}_{i}"]) for name in outputs if f"{name}_{i}" in found})
    return results, job.id


def _ref(value: Any) -> ArtifactRef:
    return value if isinstance(value, ArtifactRef) else ArtifactRef.model_validate(value)
