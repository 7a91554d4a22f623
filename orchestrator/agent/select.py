"""The select stage: which tool and model run each task.

Candidates come from the active profile when it lists the task (in its order of
preference), else from the registry's tools for the task. A candidate is kept
only if its tool is registered, can take the task's inputs, its model can be
loaded here (a zoo checkpoint, an existing path, a hub id that is cached or
reachable) and its weights fit the model manager's memory budget.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.errors import ModelError

from .plan import Binding, BoundTask, retarget

__all__ = ["candidates_for", "model_unavailable"]

logger = logging.getLogger("orchestrator.agent.select")

Candidate = tuple[str, str | None, dict[str, list[Binding]]]


def candidates_for(task: BoundTask, registry: Any, profile: Any, settings: Any = None) -> tuple[list[Candidate], list[str]]:
    """``([(tool, model, rebound inputs)], [why others were dropped])`` in order of preference."""
    out: list[Candidate] = []
    reasons: list[str] = []
    choices = []
    if profile is not None and not task.pinned:
        try:
            choices = list(profile.candidates(task.task))
        except Exception as exc:  # noqa: BLE001 - a broken profile must not stop planning
            reasons.append(f"profile error: {exc}")
    elif profile is not None and task.pinned:
        choices = [c for c in profile.candidates(task.task) if c.tool == task.tool]
    if choices and not any((c.tool or (task.tools[0] if task.tools else None)) in registry for c in choices):
        reasons.append(f"{task.task}: none of the profile's tools is registered here; using the registry's")
        choices = []
    if choices:
        for choice in choices:
            tool_name = choice.tool or (task.tools[0] if task.tools else None)
            if tool_name is None or tool_name not in registry:
                reasons.append(f"{task.task}: profile names tool {tool_name!r}, which is not registered")
                continue
            inputs = retarget(task, registry.get(tool_name))
            if inputs is None:
                reasons.append(f"{task.task}: tool {tool_name} cannot take this task's inputs")
                continue
            why = model_unavailable(choice.model, task=task.task)
            if why:
                reasons.append(f"{task.task}: {tool_name} with model {choice.model!r}: {why}")
                continue
            out.append((tool_name, choice.model, inputs))
        return out, reasons
    names = [task.tool] if task.pinned and task.tool else list(task.tools)
    for name in names:
        if name not in registry:
            reasons.append(f"{task.task}: tool {name!r} is not registered")
            continue
        inputs = retarget(task, registry.get(name))
        if inputs is None:
            reasons.append(f"{task.task}: tool {name} cannot take this task's inputs")
            continue
        out.append((name, None, inputs))
    return out, reasons


_checked: dict[str, str | None] = {}


def model_unavailable(model: str | None, *, task: str | None = None) -> str | None:
    """Why ``model`` cannot be used here (``None``: it can). Results are cached per process."""
    if not model:
        return None
    if model in _checked:
        return _checked[model]
    why: str | None = None
    try:
        from orchestrator import runtime
    except ImportError:
        return None
    if model.startswith("zoo:"):
        if model[4:] not in runtime.list_zoo():
            why = f"no zoo checkpoint named {model[4:]!r}"
    elif ":" in model and not model.startswith(("/", ".", "~")) and "://" not in model:
        why = None  # a tool-specific reference (espeak-ng:en): the tool checks it
    else:
        try:
            source = runtime.resolve_model(model, task=task)
        except ModelError as exc:
            why = exc.message
        else:
            why = _over_budget(source)
    _checked[model] = why
    return why


def _over_budget(source: str) -> str | None:
    try:
        from orchestrator.runtime import _manager, get_model_manager

        size = _manager._estimate_bytes(source)
        budget = get_model_manager().memory_budget_bytes
    except Exception:  # noqa: BLE001 - sizing is best effort
        return None
    if size and budget and size > budget:
        return f"its weights ({size / 2**30:.1f} GiB) exceed the memory budget ({budget / 2**30:.1f} GiB)"
    return None
