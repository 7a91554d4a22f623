"""The LLM planner: a chat client plus versioned prompts; it owns prompting and parsing.

>>> from orchestrator.agent import make_planner
>>> planner = make_planner("ollama:qwen2.5:7b")          # doctest: +SKIP
>>> plan = await planner.plan(PlanRequest("draw a fox", catalog))   # doctest: +SKIP

The plan's JSON Schema (:func:`plan_schema`: built from the request's catalog, so a
task is one of the catalog's tasks and its ``args`` are that task's input ports) goes
out as ``response_format`` (``json_schema``) where the server supports it, and
constrains decoding on a local transformers model; otherwise the answer is parsed
leniently (:func:`parse_plan` forgives what LLMs write). An answer that holds no plan
at all comes back as a :class:`Plan` with ``unreadable`` set, so the agent can ask
for a repair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.artifacts import Modality
from orchestrator.errors import PlanError

from .llm import LLMClient, Message
from .plan import Plan, PlanProblem, TaskCatalog, parse_plan
from .planner import PlanRequest
from .prompts import Prompt, load_prompt

__all__ = ["PLAN_SCHEMA", "LLMPlanner", "plan_schema"]

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
"""The JSON Schema of a plan answer (HuggingGPT's task list under ``tasks``), whatever the catalog."""

GENERATED_PATTERN = r"^<GENERATED>-[0-9]+$"
"""A reference to the output of an earlier task, as the schema admits it."""


def plan_schema(catalog: TaskCatalog, resources: Mapping[str, Modality] | None = None, *,
                max_tasks: int | None = None, max_arg_chars: int | None = None) -> dict[str, Any]:
    """The JSON Schema of a plan answer for ``catalog``: :data:`PLAN_SCHEMA` narrowed so that

    * each task is one of the catalog's tasks (``"task"`` is a ``const``, one alternative per task),
    * its ``args`` are that task's input ports (no other keys), every required port given,
      a ``many`` port as a list,
    * a media argument is one of the user's ``resources`` of that modality or ``<GENERATED>-k``
      (any string when the user gave none of that modality: the validator says what is missing),
    * there are at most ``max_tasks`` tasks (default: the ``max_plan_tasks`` setting), and a
      free string argument has at most ``max_arg_chars`` characters (``max_plan_arg_chars``).

    >>> from orchestrator.registry import default_registry
    >>> schema = plan_schema(TaskCatalog(default_registry), {"e1.jpg": Modality.IMAGE}, max_tasks=4)
    >>> caption = next(s for s in schema["properties"]["tasks"]["items"]["anyOf"]
    ...                if s["properties"]["task"]["const"] == "image-to-text")
    >>> caption["properties"]["args"]["properties"]["image"]["anyOf"][0]
    {'type': 'string', 'enum': ['e1.jpg']}
    """
    if max_tasks is None or max_arg_chars is None:
        from orchestrator.settings import get_settings

        settings = get_settings()
        max_tasks = settings.max_plan_tasks if max_tasks is None else max_tasks
        max_arg_chars = settings.max_plan_arg_chars if max_arg_chars is None else max_arg_chars
    resources = dict(resources or {})

    def value(modality: Modality, many: bool) -> dict[str, Any]:
        names = sorted(n for n, m in resources.items() if m is modality)
        one: dict[str, Any] = {"type": "string", "maxLength": max_arg_chars}
        if modality is not Modality.TEXT and names:
            one = {"anyOf": [{"type": "string", "enum": names}, {"type": "string", "pattern": GENERATED_PATTERN}]}
        return {"type": "array", "items": one} if many else one

    alternatives = []
    for name, info in sorted(catalog.tasks.items()):
        args = {
            "type": "object",
            "properties": {p.name: value(p.modality, p.many) for p in info.inputs},
            "required": [p.name for p in info.inputs if not p.optional],
            "additionalProperties": False,
        }
        alternatives.append({
            "type": "object",
            "properties": {"task": {"const": name}, "id": {"type": "integer"},
                           "dep": {"type": "array", "items": {"type": "integer"}}, "args": args},
            "required": ["task", "id", "dep", "args"],
            "additionalProperties": False,
        })
    return {
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "items": {"anyOf": alternatives}, "maxItems": max_tasks},
            "refusal": {"type": ["string", "null"]},
        },
        "required": ["tasks"],
    }


class LLMPlanner:
    """Plans with a chat LLM: planner prompt -> answer -> :func:`parse_plan`; repairs by
    showing the LLM its answer and the typed problems (as sentences)."""

    name = "llm"

    def __init__(self, llm: LLMClient, *, prompt_versions: Mapping[str, int] | None = None,
                 max_tasks: int | None = None, max_arg_chars: int | None = None) -> None:
        self.llm = llm
        self.prompt_versions = dict(prompt_versions or {})
        self.max_tasks = max_tasks
        self.max_arg_chars = max_arg_chars

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

    def schema(self, request: PlanRequest) -> dict[str, Any]:
        """The JSON Schema the answer must follow: :func:`plan_schema` of the request's catalog and resources."""
        return plan_schema(request.catalog, request.resources, max_tasks=self.max_tasks,
                           max_arg_chars=self.max_arg_chars)

    async def plan(self, request: PlanRequest) -> Plan:
        reply = await self.llm.achat(self.messages(request), temperature=0.0, json_schema=self.schema(request),
                                     deadline=request.deadline)
        return _read(reply.text)

    async def repair(self, request: PlanRequest, plan: Plan, problems: Sequence[PlanProblem]) -> Plan:
        listing = "\n".join(f"- {p}" for p in problems)
        messages = self.messages(request) + [
            {"role": "assistant", "content": plan.source if plan.source is not None else plan.to_json()},
            {"role": "user", "content": self.prompt("repair").render(problems=listing)},
        ]
        reply = await self.llm.achat(messages, temperature=0.0, json_schema=self.schema(request),
                                     deadline=request.deadline)
        return _read(reply.text)


def _read(text: str) -> Plan:
    try:
        plan = parse_plan(text)
    except PlanError as exc:
        return Plan(source=text, unreadable=exc.message)
    plan.source = text
    return plan
