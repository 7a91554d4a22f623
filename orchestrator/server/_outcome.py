"""How a run ended, the run record, and events as JSON (shared by the server and the CLI; no web imports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from orchestrator.artifacts import ArtifactRef
from orchestrator.workflow.events import NodeSummary

__all__ = ["Outcome", "RunRecord", "RunStatus", "event_json", "jsonable"]

RunStatus = Literal["queued", "running", "succeeded", "partial", "refused", "failed", "cancelled", "interrupted"]
"""A run's status; the last six are final (``refused``: a prompt nothing of which can be done here)."""


@dataclass
class Outcome:
    """How a run ended, as an executor reports it (``refusals``: what a prompt run's planner or tools declined)."""

    status: RunStatus
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    answer: str | None = None
    plan: Any = None
    refusals: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class RunRecord(TypedDict):
    """A run's persisted state (``runs/<id>`` in the store); the REST API shows it as ``RunView``."""

    id: str
    kind: str
    status: RunStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    request: dict[str, Any]
    options: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    errors: dict[str, str]
    error: dict[str, Any] | None
    answer: str | None
    plan: Any
    nodes: dict[str, NodeSummary]
    last_event_id: int
    cancel_requested: bool
    owner: str
    refusals: NotRequired[list[str]]


def event_json(event: Any) -> dict[str, Any]:
    """An event (pydantic model, dataclass, dict, or a bare text delta) as a JSON dict."""
    if isinstance(event, dict):
        return jsonable(event)
    dump: Callable[..., Any] | None = getattr(event, "model_dump", None)
    if dump is not None:
        return dict(dump(mode="json"))
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        doc = jsonable(dataclasses.asdict(event))
        doc.setdefault("type", type(event).__name__)
        return doc
    if isinstance(event, str):
        return {"type": "answer_delta", "delta": event}
    return {"type": type(event).__name__, "value": str(event)}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
