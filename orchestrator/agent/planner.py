"""The planner protocol: what turns a request into a HuggingGPT plan.

Two implementations: the LLM planner (a client plus versioned prompts; it owns
prompting and parsing) and the offline planner (no model of language; it reads
the tool catalog). The agent talks to either through this interface only.

>>> class Nothing:
...     name = "nothing"
...     async def plan(self, request): return Plan(refusal="nothing to do")
...     async def repair(self, request, plan, problems): return plan
>>> isinstance(Nothing(), Planner)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from orchestrator.artifacts import Modality

from .plan import Plan, PlanProblem, TaskCatalog

__all__ = ["PlanProblem", "PlanRequest", "Planner"]


@dataclass(frozen=True)
class PlanRequest:
    """Everything a planner may read to plan one request.

    ``resources`` names the user's inputs (files, uploads, earlier artifacts) with
    their modality; a plan refers to them by name in its ``args``.
    ``history`` is the earlier conversation, oldest first, as plain text turns
    (``"user: ..."``, ``"assistant: ..."``). ``deadline`` (a ``time.monotonic()``)
    is when the run's LLM time is up; a planner that calls an LLM passes it on.
    """

    text: str
    catalog: TaskCatalog
    resources: Mapping[str, Modality] = field(default_factory=dict)
    history: Sequence[str] = ()
    deadline: float | None = None


@runtime_checkable
class Planner(Protocol):
    """Turns a request into a plan, and a plan with problems into a better one."""

    name: str

    async def plan(self, request: PlanRequest) -> Plan:
        """A plan for ``request``; a refusal (``Plan.refusal``) when nothing can serve it."""
        ...

    async def repair(self, request: PlanRequest, plan: Plan, problems: Sequence[PlanProblem]) -> Plan:
        """A corrected plan, given the problems validation found in ``plan``."""
        ...
