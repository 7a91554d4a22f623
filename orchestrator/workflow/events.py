"""Typed run events, the same for a hand-written workflow, an agent plan and a chat span.

Every event carries ``type``, ``run_id``, ``seq`` (1-based, in emission order),
``ts`` (UNIX seconds) and, for node events, ``node``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from orchestrator.artifacts import ArtifactRef

__all__ = [
    "Event",
    "NodeCached",
    "NodeFailed",
    "NodeFinished",
    "NodeProgress",
    "NodeSkipped",
    "NodeStarted",
    "RunFailed",
    "RunFinished",
    "RunStarted",
    "NodeSummary",
    "event_adapter",
    "fold_node",
]


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")

    run_id: str
    seq: int = 0
    ts: float = Field(default_factory=time.time)
    node: str | None = None


class RunStarted(_Base):
    type: Literal["run_started"] = "run_started"
    workflow: str
    nodes: list[str]


class NodeStarted(_Base):
    type: Literal["node_started"] = "node_started"
    tool: str
    attempt: int = 1


class NodeProgress(_Base):
    type: Literal["node_progress"] = "node_progress"
    step: int
    total: int
    message: str | None = None


class NodeCached(_Base):
    type: Literal["node_cached"] = "node_cached"
    outputs: dict[str, ArtifactRef | list[ArtifactRef]]


class NodeFinished(_Base):
    type: Literal["node_finished"] = "node_finished"
    outputs: dict[str, ArtifactRef | list[ArtifactRef]]
    seconds: float


class NodeFailed(_Base):
    type: Literal["node_failed"] = "node_failed"
    error: dict[str, Any]
    attempts: int = 1


class NodeSkipped(_Base):
    type: Literal["node_skipped"] = "node_skipped"
    reason: str


class RunFinished(_Base):
    type: Literal["run_finished"] = "run_finished"
    status: Literal["succeeded", "partial"]
    outputs: dict[str, ArtifactRef | list[ArtifactRef]]
    errors: dict[str, str] = Field(default_factory=dict)
    seconds: float


class RunFailed(_Base):
    type: Literal["run_failed"] = "run_failed"
    status: Literal["failed", "cancelled", "refused", "interrupted"] = "failed"
    error: dict[str, Any]
    errors: dict[str, str] = Field(default_factory=dict)
    seconds: float


Event = Annotated[
    RunStarted | NodeStarted | NodeProgress | NodeCached | NodeFinished | NodeFailed | NodeSkipped | RunFinished | RunFailed,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
"""Parse an event back from JSON: ``event_adapter.validate_python(doc)``."""


class NodeSummary(TypedDict, total=False):
    """What :func:`fold_node` keeps per node (JSON-ready)."""

    status: Literal["pending", "running", "succeeded", "cached", "failed", "refused", "skipped"]
    tool: str | None
    attempt: int
    step: int | None
    total: int | None
    seconds: float | None
    outputs: dict[str, Any]
    error: str | None
    error_type: str | None
    reason: str | None


def fold_node(nodes: dict[str, NodeSummary], doc: Mapping[str, Any],
              node_tools: dict[str, str] | None = None) -> str | None:
    """Fold one event (as JSON) into per-node summaries; returns the node it concerned, if any.

    The one node-summary fold (the agent's task outcomes, the server's run record, the
    CLI's table). An entry holds ``status`` (pending, running, succeeded, cached, failed,
    refused, skipped), ``tool``, ``attempt``, ``step``/``total``, ``seconds``, ``outputs``
    (port -> ref JSON; cached nodes list theirs too), ``error``/``error_type`` and ``reason``.
    A failure of type ``TaskRefused`` (a tool declining a task) is ``refused``.
    """
    node = doc.get("node")
    if not node:
        return None
    kind = doc.get("type")
    entry = nodes.setdefault(str(node), NodeSummary(status="pending"))
    if kind == "node_started":
        if node_tools is not None:
            node_tools[str(node)] = doc.get("tool", "")
        entry.update(status="running", tool=doc.get("tool"), attempt=doc.get("attempt", 1))
    elif kind == "node_progress":
        entry.update(step=doc.get("step"), total=doc.get("total"))
    elif kind == "node_finished":
        entry.update(status="succeeded", seconds=doc.get("seconds"), outputs=dict(doc.get("outputs") or {}))
    elif kind == "node_cached":
        entry.update(status="cached", seconds=0.0, outputs=dict(doc.get("outputs") or {}))
    elif kind == "node_failed":
        error = doc.get("error") or {}
        refused = error.get("type") == "TaskRefused"
        entry.update(status="refused" if refused else "failed", error=error.get("message"), error_type=error.get("type"))
    elif kind == "node_skipped":
        entry.update(status="skipped", reason=doc.get("reason"))
    return str(node)
