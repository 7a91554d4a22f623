"""How a run ended, and events as JSON (shared by the server and the CLI; no web imports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.artifacts import ArtifactRef

__all__ = ["Outcome", "event_json", "jsonable"]


@dataclass
class Outcome:
    """How a run ended, as an executor reports it."""

    status: str
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    answer: str | None = None
    plan: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


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
