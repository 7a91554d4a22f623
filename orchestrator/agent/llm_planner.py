"""The LLM planner: a chat client plus versioned prompts; it owns prompting and parsing.

>>> from orchestrator.agent import make_planner
>>> planner = make_planner("ollama:qwen2.5:7b")          # doctest: +SKIP
>>> plan = await planner.plan(PlanRequest("draw a fox", catalog))   # doctest: +SKIP

The plan's JSON Schema goes out as ``response_format`` (``json_schema``) where the
server supports it; otherwise the answer is parsed leniently (:func:`parse_plan`
forgives what LLMs write). An answer that holds no plan at all comes back as a
:class:`Plan` with ``unreadable`` set, so the agent can ask for a repair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.errors import PlanError

from .llm import LLMClient, Message
from .plan import Plan, PlanProblem, parse_plan
from .planner import PlanRequest
from .prompts import Prompt, load_prompt

__all__ = ["PLAN_SCHEMA", "LLMPlanner"]

_ARG = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "task": {"type": "string"},
                    "id": {"type": "integer"},
                    "dep": {"type": "array", "items": {"type": "integer"}},
                    "args": {"type": "object", "additionalProperties": _ARG},
                },
                "required": ["task", "id", "dep", "args"],
            },
        },
        "refusal": {"type": ["string", "null"]},
    },
    "required": ["tasks"],
}
"""The JSON Schema of a plan answer (HuggingGPT's task list under ``tasks``)."""


class LLMPlanner:
    """Plans with a chat LLM: planner prompt -> answer -> :func:`parse_plan`; repairs by
    showing the LLM its answer and the typed problems (as sentences)."""

    name = "llm"

    def __init__(self, llm: LLMClient, *, prompt_versions: Mapping[str, int] | None = None) -> None:
        self.llm = llm
        self.prompt_versions = dict(prompt_versions or {})

    def __repr__(self) -> str:
        return f"LLMPlanner({self.llm!r})"

    def prompt(self, name: str) -> Prompt:
        return load_prompt(name, self.prompt_versions.get(name))

    def messages(self, request: PlanRequest) -> list[Message]:
        """The planning conversation: system prompt (tasks, resources), earlier turns, the request."""
        resources = "\n".join(f"- {n}: {m.value}" for n, m in request.resources.items()) or "(none)"
        system = self.prompt("planner").render(tasks=request.catalog.describe(), resources=resources)
        history: list[Message] = []
        for turn in request.history:
            role, _, content = turn.partition(": ")
            history.append({"role": role if role in ("user", "assistant") else "user", "content": content})
        return [{"role": "system", "content": system}, *history, {"role": "user", "content": request.text}]

    async def plan(self, request: PlanRequest) -> Plan:
        reply = await self.llm.achat(self.messages(request), temperature=0.0, json_schema=PLAN_SCHEMA,
                                     deadline=request.deadline)
        return _read(reply.text)

    async def repair(self, request: PlanRequest, plan: Plan, problems: Sequence[PlanProblem]) -> Plan:
        listing = "\n".join(f"- {p}" for p in problems)
        messages = self.messages(request) + [
            {"role": "assistant", "content": plan.source if plan.source is not None else plan.to_json()},
            {"role": "user", "content": self.prompt("repair").render(problems=listing)},
        ]
        reply = await self.llm.achat(messages, temperature=0.0, json_schema=PLAN_SCHEMA, deadline=request.deadline)
        return _read(reply.text)


def _read(text: str) -> Plan:
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        return Plan(source=text, unreadable=exc.message)
    plan.source = text
    return plan
