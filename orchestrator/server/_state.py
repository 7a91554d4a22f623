"""What every route needs: settings, the store, the run manager, the agent, compiled workflows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from orchestrator.artifacts import ArtifactRef, ArtifactStore, Modality
from orchestrator.registry import ToolRegistry
from orchestrator.runs import AgentBackend, RunService
from orchestrator.settings import Settings
from orchestrator.workflow import CompiledWorkflow, Workflow

from ._metrics import Metrics
from ._runs import RunManager
from ._signing import UrlSigner
from .settings import ServerSettings

__all__ = ["ServerState", "WorkflowCache", "get_state"]


class WorkflowCache:
    """Compiled workflows by prebuilt-graph name or document hash (validation and
    LangGraph compilation happen once, not per run)."""

    def __init__(self, registry: ToolRegistry, core: Settings, size: int = 128) -> None:
        self.registry = registry
        self.core = core
        self.size = size
        self._items: OrderedDict[str, CompiledWorkflow] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: str) -> CompiledWorkflow | None:
        """The compiled workflow under ``key`` (:meth:`graph_key`, :meth:`document_key`) if it is cached."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def _get(self, key: str, build: Any) -> CompiledWorkflow:
        hit = self.cached(key)
        if hit is not None:
            return hit
        compiled = build().compile(registry=self.registry, settings=self.core)
        with self._lock:
            self._items[key] = compiled
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return compiled

    @staticmethod
    def graph_key(name: str) -> str:
        return f"graph:{name}"

    @staticmethod
    def document_key(doc: dict[str, Any]) -> str:
        return "doc:" + hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def graph(self, name: str) -> CompiledWorkflow:
        from graphs import get_graph

        return self._get(self.graph_key(name), lambda: get_graph(name))

    def document(self, doc: dict[str, Any]) -> CompiledWorkflow:
        return self._get(self.document_key(doc), lambda: Workflow.from_dict(doc))

    async def agraph(self, name: str) -> CompiledWorkflow:
        """:meth:`graph` from an event loop: at once when cached, else compiled in a thread."""
        return self.cached(self.graph_key(name)) or await asyncio.to_thread(self.graph, name)

    async def adocument(self, doc: dict[str, Any]) -> CompiledWorkflow:
        """:meth:`document` from an event loop: at once when cached, else compiled in a thread."""
        return self.cached(self.document_key(doc)) or await asyncio.to_thread(self.document, doc)


@dataclass
class ServerState:
    settings: ServerSettings
    core: Settings
    store: ArtifactStore
    registry: ToolRegistry
    metrics: Metrics
    runs: RunManager
    agent: AgentBackend
    workflows: WorkflowCache
    owns_store: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    signer: UrlSigner | None = None
    """Signs artifact links when the API needs a key (see ``_signing``)."""
    service: RunService = field(init=False)
    """Executes runs (the same service the CLI uses); the run manager queues and records them."""

    def __post_init__(self) -> None:
        self.service = RunService(self.store, agent=self.agent)

    def base_url(self, request: Request) -> str:
        return (self.settings.public_url or str(request.base_url)).rstrip("/")

    def artifact_url(self, request: Request, artifact_id: str) -> str:
        """Where to download an artifact; signed (works without the key) when keys are on."""
        url = f"{self.base_url(request)}/v1/artifacts/{artifact_id}"
        return self.signer.sign(url, artifact_id) if self.signer is not None else url

    def artifact_view(self, request: Request, ref: ArtifactRef | dict[str, Any]) -> dict[str, Any]:
        doc = ref.model_dump(mode="json") if isinstance(ref, ArtifactRef) else dict(ref)
        doc["meta"] = {k: v for k, v in (doc.get("meta") or {}).items() if v is not None}
        doc["url"] = self.artifact_url(request, doc["id"])
        return doc

    def run_view(self, request: Request, record: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in record.items() if k != "owner"}
        view["outputs"] = {k: self.artifact_view(request, v) for k, v in (record.get("outputs") or {}).items()}
        view["inputs"] = {k: self.artifact_view(request, v) if isinstance(v, dict) and "id" in v else v
                          for k, v in (record.get("inputs") or {}).items()}
        view["events_url"] = f"{self.base_url(request)}/v1/runs/{record['id']}/events"
        return view


async def get_state(request: Request) -> ServerState:
    """The app's state (async: FastAPI would run a plain function in a worker thread, a hop per request)."""
    state: ServerState = request.app.state.orchestrator
    return state


def declared_inputs(compiled: CompiledWorkflow) -> dict[str, tuple[Modality, bool]]:
    """A compiled workflow's inputs: name -> (modality, optional)."""
    return {i.name: (Modality(i.modality), i.optional) for i in compiled.workflow.inputs}
