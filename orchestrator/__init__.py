"""Any-to-any agentic orchestration: an LLM plans, a LangGraph graph routes tasks to
encoders and generators, and every intermediate result is an artifact in a store."""

from __future__ import annotations

from orchestrator.artifacts import (
    ArtifactMeta,
    ArtifactRef,
    ArtifactStore,
    Audio,
    LocalArtifactStore,
    Modality,
    Provenance,
    RedisArtifactStore,
    Video,
    open_store,
)
from orchestrator.errors import OrchestratorError
from orchestrator.registry import ToolRegistry, default_registry, get_tool, list_tools
from orchestrator.settings import Settings, get_settings
from orchestrator.tool import NoParams, Port, Tool, ToolContext, ToolSpec, tool

__version__ = "0.1.0"

__all__ = [
    "ArtifactMeta",
    "ArtifactRef",
    "ArtifactStore",
    "Audio",
    "LocalArtifactStore",
    "Modality",
    "NoParams",
    "OrchestratorError",
    "Port",
    "Provenance",
    "RedisArtifactStore",
    "Settings",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "ToolSpec",
    "Video",
    "__version__",
    "default_registry",
    "get_settings",
    "get_tool",
    "list_tools",
    "open_store",
    "tool",
]
