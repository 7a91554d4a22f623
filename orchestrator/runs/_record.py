"""How a run ended (:class:`Outcome`), its persisted state (:class:`RunRecord`) and events as JSON."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import ArtifactRef
from orchestrator.workflow.events import NodeSummary, fold_node

__all__ = ["ACTIVE", "TERMINAL", "Outcome", "RunKind", "RunRecord", "RunStatus", "event_json", "flat_outputs"]

RunStatus = Literal["queued", "running", "succeeded", "partial", "refused", "failed", "cancelled", "interrupted"]
"""A run's status; the last six are final (``refused``: a prompt nothing of which can be done here)."""
RunKind = Literal["prompt", "graph", "workflow", "chat"]
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
TERMINAL: frozenset[str] = frozenset({"succeeded", "partial", "refused", "failed", "cancelled", "interrupted"})


def flat_outputs(outputs: Mapping[str, ArtifactRef | list[ArtifactRef]]) -> dict[str, ArtifactRef]:
    """One ref per name: a list output ``x`` (a ``many`` port) becomes ``x``, ``x_2``, ``x_3`` …"""
    flat: dict[str, ArtifactRef] = {}
    for name, value in outputs.items():
        for i, ref in enumerate(value if isinstance(value, list) else [value]):
            flat[name if i == 0 else f"{name}_{i + 1}"] = ref
    return flat


@dataclass
class Outcome:
    """How a run ended, as the service reports it (``refusals``: what a prompt run's planner or tools declined)."""

    status: RunStatus
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    answer: str | None = None
    plan: dict[str, Any] | None = None
    refusals: list[str] = field(default_factory=list)


class RunRecord(BaseModel):
    """A run's state: what was asked, where it is, what it produced and what went wrong.

    The server persists it as ``runs/<id>`` and shows it as ``RunView``; the CLI writes
    its ``run.json`` from it. :meth:`fold` keeps the per-node summaries from the run's
    events (the one fold, :func:`~orchestrator.workflow.events.fold_node`); :meth:`finish`
    writes the :class:`Outcome` in.

    >>> record = RunRecord(id="r1", kind="graph")
    >>> record.fold({"type": "node_started", "node": "a", "tool": "text.template"})
    'a'
    >>> record.nodes["a"]["status"]
    'running'
    """

    model_config = ConfigDict(extra="allow")

    id: str
    kind: RunKind
    status: RunStatus = "queued"
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Input name -> artifact ref JSON."""
    outputs: dict[str, Any] = Field(default_factory=dict)
    """Output name -> artifact ref JSON (a list output is numbered: ``x``, ``x_2`` …)."""
    errors: dict[str, str] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    answer: str | None = None
    plan: dict[str, Any] | None = None
    """The plan a prompt run executed (tasks, dependencies, arguments)."""
    refusals: list[str] = Field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Node id -> its summary (a :class:`~orchestrator.workflow.events.NodeSummary`; ``cancelled``
    for a node a cancelled or interrupted run left unfinished)."""
    last_event_id: int = 0
    cancel_requested: bool = False
    owner: str = ""
    executor: str = "local"
    """Where the nodes ran: ``local`` (in process) or a scaled-out executor's name."""

    def start(self, now: float | None = None) -> None:
        self.status = "running"
        self.started_at = time.time() if now is None else now

    def fold(self, doc: Mapping[str, Any], node_tools: dict[str, str] | None = None) -> str | None:
        """Fold one event (as JSON) into the node summaries; returns the node it concerned, if any."""
        return fold_node(cast(dict[str, NodeSummary], self.nodes), doc, node_tools)

    def finish(self, outcome: Outcome, now: float | None = None) -> None:
        """Write a final :class:`Outcome` in; nodes still pending or running of a cancelled or
        interrupted run are ``cancelled``."""
        self.status = outcome.status
        self.finished_at = time.time() if now is None else now
        self.outputs = {k: v.model_dump(mode="json") for k, v in outcome.outputs.items()}
        self.errors = dict(outcome.errors)
        self.error = outcome.error
        self.answer = outcome.answer
        self.plan = outcome.plan
        self.refusals = list(outcome.refusals)
        if outcome.status in ("cancelled", "interrupted"):
            for entry in self.nodes.values():
                if entry.get("status") in ("pending", "running"):
                    entry["status"] = "cancelled"

    def to_json(self) -> dict[str, Any]:
        """The record as stored and served (JSON-ready)."""
        return self.model_dump(mode="json")


def event_json(event: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """An event (a pydantic event model, or already a dict) as a JSON dict."""
    if isinstance(event, BaseModel):
        return dict(event.model_dump(mode="json"))
    return {str(k): _jsonable(v) for k, v in event.items()}


def _jsonable(value: Any) -> Any:
    """Plain JSON from dicts, lists, pydantic models, dataclasses and scalars (anything else as ``str``)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
