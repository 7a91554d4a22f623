"""Workflow graphs: typed tool nodes compiled to LangGraph, parallel, cached, observable."""

from __future__ import annotations

from . import events
from ._builder import InputDecl, NodeDecl, OutputDecl, Workflow, WorkflowDoc
from ._engine import CompiledWorkflow, GraphState, NodeResult, RunResult, cache_key, coerce_input
from ._loop import CancelFlag, QuickCalls, quick_calls

__all__ = [
    "CancelFlag",
    "CompiledWorkflow",
    "GraphState",
    "InputDecl",
    "NodeDecl",
    "NodeResult",
    "OutputDecl",
    "QuickCalls",
    "RunResult",
    "Workflow",
    "WorkflowDoc",
    "cache_key",
    "coerce_input",
    "events",
    "quick_calls",
]
