"""Prebuilt workflows, listed by name.

A prebuilt graph is a function returning a :class:`~orchestrator.workflow.Workflow`,
registered with :func:`graph`. Modules in this package register theirs on import::

    from graphs import get_graph, list_graphs
    wf = get_graph("caption-to-speech")
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import WorkflowError
from orchestrator.workflow import Workflow

__all__ = ["GraphInfo", "get_graph", "graph", "list_graphs"]


@dataclass(frozen=True)
class GraphInfo:
    name: str
    description: str
    build: Callable[[], Workflow]

    def describe(self) -> dict[str, object]:
        wf = self.build()
        return {
            "name": self.name,
            "description": self.description,
            "inputs": [i.model_dump(mode="json") for i in wf.inputs],
            "outputs": [o.name for o in wf.outputs],
            "nodes": [{"id": n.id, "tool": n.tool} for n in wf.nodes],
        }


_GRAPHS: dict[str, GraphInfo] = {}
_loaded = False


def graph(name: str) -> Callable[[Callable[[], Workflow]], Callable[[], Workflow]]:
    """Register a function returning a Workflow as the prebuilt graph ``name``."""

    def wrap(fn: Callable[[], Workflow]) -> Callable[[], Workflow]:
        if name in _GRAPHS and _GRAPHS[name].build is not fn:
            raise WorkflowError(f"a prebuilt graph named {name!r} already exists", graph=name)
        doc = (fn.__doc__ or "").strip()
        _GRAPHS[name] = GraphInfo(name, doc.splitlines()[0] if doc else name, fn)
        return fn

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")


def list_graphs() -> list[GraphInfo]:
    _load()
    return sorted(_GRAPHS.values(), key=lambda g: g.name)


def get_graph(name: str) -> Workflow:
    """A fresh Workflow for the prebuilt graph ``name``."""
    _load()
    if name not in _GRAPHS:
        raise WorkflowError(f"unknown prebuilt graph {name!r}; known: {sorted(_GRAPHS)}", graph=name)
    return _GRAPHS[name].build()
