"""Agent events: what the planner and the chat runner report, next to the engine's own events.

A run of the agent yields the engine's events unchanged (``run_started``,
``node_finished`` … of the plan's workflow) interleaved with these. Every agent
event has ``type``, ``ts`` and ``agent_run`` (the agent run's id; engine events
carry the workflow run's ``run_id``). :data:`AnyEvent` is the one discriminated
union of both (``any_event_adapter.validate_python(doc)`` reads one back from JSON).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from orchestrator.artifacts import ArtifactRef
from orchestrator.workflow import events as engine

__all__ = [
    "AgentEvent",
    "AnyEvent",
    "AgentFinished",
    "AnswerDelta",
    "AnswerReady",
    "ChatDone",
    "ModelsSelected",
    "PlanReady",
    "PlanRejected",
    "PlanRepaired",
    "SpanDispatched",
    "SpanFinished",
    "SpanNote",
    "any_event_adapter",
]


class AgentEvent(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    type: str
    agent_run: str = ""
    ts: float = Field(default_factory=time.time)


class PlanReady(AgentEvent):
    """A plan passed validation (``attempt`` 0: first try)."""

    type: Literal["plan_ready"] = "plan_ready"
    plan: list[dict[str, Any]]
    attempt: int = 0
    notes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    refusal: str | None = None
    """What of the request the planner refused (the rest is planned)."""


class PlanRepaired(AgentEvent):
    """The plan had problems; the LLM was asked to repair it."""

    type: Literal["plan_repaired"] = "plan_repaired"
    problems: list[str]
    attempt: int
    issues: list[dict[str, Any]] = Field(default_factory=list)
    """The problems as typed records: ``message``, ``task_id``, ``field``."""


class PlanRejected(AgentEvent):
    """No valid plan after the allowed repairs: the answer is written without tools."""

    type: Literal["plan_rejected"] = "plan_rejected"
    problems: list[str]


class ModelsSelected(AgentEvent):
    type: Literal["models_selected"] = "models_selected"
    selections: dict[str, dict[str, Any]]


class AnswerDelta(AgentEvent):
    type: Literal["answer_delta"] = "answer_delta"
    text: str


class AnswerReady(AgentEvent):
    type: Literal["answer_ready"] = "answer_ready"
    text: str
    artifacts: list[ArtifactRef] = Field(default_factory=list)


class SpanDispatched(AgentEvent):
    """A closed span went to its decoder (``run_id``: the workflow run)."""

    type: Literal["span_dispatched"] = "span_dispatched"
    index: int
    kind: str
    content: str
    run_id: str
    tool: str | None = None
    latency_ms: float = 0.0
    """From the parser seeing the closing tag to the workflow run being started."""


class SpanFinished(AgentEvent):
    type: Literal["span_finished"] = "span_finished"
    index: int
    kind: str
    ref: ArtifactRef | None = None
    refs: list[ArtifactRef] = Field(default_factory=list)
    error: str | None = None


class SpanNote(AgentEvent):
    """Something the span parser fixed up, or a span not dispatched (over the limit)."""

    type: Literal["span_note"] = "span_note"
    kind: str
    detail: str


class ChatDone(AgentEvent):
    type: Literal["chat_done"] = "chat_done"
    session_id: str
    message: str
    artifacts: list[ArtifactRef] = Field(default_factory=list)


class AgentFinished(AgentEvent):
    """The last event of ``Agent.astream``; ``result`` holds the ``AgentResult`` (not serialized)."""

    type: Literal["agent_finished"] = "agent_finished"
    status: Literal["succeeded", "partial", "refused", "failed", "cancelled", "no_tools"]
    answer: str
    refusals: list[str] = Field(default_factory=list)
    result: Any = Field(default=None, exclude=True)


AnyEvent = Annotated[
    engine.RunStarted | engine.NodeStarted | engine.NodeProgress | engine.NodeCached | engine.NodeFinished
    | engine.NodeFailed | engine.NodeSkipped | engine.RunFinished | engine.RunFailed
    | PlanReady | PlanRepaired | PlanRejected | ModelsSelected | AnswerDelta | AnswerReady | SpanDispatched
    | SpanFinished | SpanNote | ChatDone | AgentFinished,
    Field(discriminator="type"),
]
"""Every event an agent run or chat turn yields: the engine's and the agent's, told apart by ``type``."""

any_event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
"""Read an event back from JSON: ``any_event_adapter.validate_python(doc)``."""
