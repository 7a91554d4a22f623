"""``/v1/tools``, ``/v1/graphs``: what can be run (tasks, ports, params schemas, prebuilt graphs)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from orchestrator.artifacts import Modality
from orchestrator.workflow import Workflow

from .._errors import ApiError
from .._state import ServerState, get_state

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/tools", summary="Registered tools")
async def tools(
    task: str | None = Query(None, description="only tools for this task (e.g. text-to-image)"),
    input_modality: Modality | None = Query(None, description="only tools taking this modality"),
    output_modality: Modality | None = Query(None, description="only tools producing this modality"),
    state: ServerState = Depends(get_state),
) -> dict[str, Any]:
    """Every tool with its task, input and output ports and the JSON Schema of its params."""
    found = await asyncio.to_thread(state.registry.find, task=task, input_modality=input_modality,
                                    output_modality=output_modality)
    return {"tools": [t.spec.describe() for t in found]}


@router.get("/tools/{name}", summary="One tool")
async def tool(name: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    found = await asyncio.to_thread(state.registry.get, name)
    return found.spec.describe()


@router.get("/graphs", summary="Prebuilt graphs")
async def graphs(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Prebuilt workflows that ``POST /v1/runs`` accepts as ``graph``."""
    return {"graphs": await asyncio.to_thread(_graphs)}


def _graphs() -> list[dict[str, Any]]:
    from graphs import list_graphs

    return [g.describe() for g in list_graphs()]


@router.get("/graphs/{name}", summary="One prebuilt graph, with its workflow document")
async def graph(name: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    def load() -> dict[str, Any]:
        from graphs import get_graph, list_graphs

        info = next((g for g in list_graphs() if g.name == name), None)
        if info is None:
            raise ApiError(404, f"no prebuilt graph {name!r}", type="GraphNotFound", graph=name)
        return {**info.describe(), "workflow": get_graph(name).to_dict()}

    return await asyncio.to_thread(load)


@router.get("/workflows/schema", summary="JSON Schema of workflow documents")
async def workflow_schema() -> dict[str, Any]:
    return Workflow.json_schema()

