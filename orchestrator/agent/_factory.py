"""Building planners from a spec: the one place the agent, the server and the CLI get one."""

from __future__ import annotations

from typing import Any

from .llm import make_llm
from .llm_planner import LLMPlanner
from .offline import OfflinePlanner
from .planner import Planner

__all__ = ["make_planner"]


def make_planner(spec: str | None = None, settings: Any = None, *, registry: Any = None) -> Planner:
    """The planner a spec names: ``None`` / ``"offline"`` / ``"heuristic"``: the offline planner;
    an LLM spec as :func:`make_llm` takes (``openai:<model>[@url]``, ``ollama:…``,
    ``transformers:…``): the LLM planner on that client.

    >>> make_planner("offline").name
    'offline'
    """
    llm = make_llm(spec or "offline", settings)
    if llm is None:
        return OfflinePlanner()
    if settings is None:
        return LLMPlanner(llm)  # the schema's limits come from the current settings
    return LLMPlanner(llm, max_tasks=getattr(settings, "max_plan_tasks", None),
                      max_arg_chars=getattr(settings, "max_plan_arg_chars", None))
