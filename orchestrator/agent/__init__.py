"""The central LLM agent: plans (HuggingGPT), signal spans (NExT-GPT), chat memory.

>>> from orchestrator.agent import Agent, make_planner
>>> agent = Agent(llm="offline")                    # doctest: +SKIP
>>> agent.run("Generate an image of a red fox").answer  # doctest: +SKIP

See docs/agent.md for the stages, the LLM specs, the span rules and the events.
"""

from __future__ import annotations

from . import events
from ._execute import RunOptions, TaskOutcome
from ._factory import make_planner
from .graph import Agent, AgentResult, AgentStatus, build_graph
from .llm import (
    ChatOptions,
    LLMClient,
    LLMReply,
    OpenAICompatClient,
    ScriptedLLM,
    ToolCall,
    TransformersChatClient,
    make_llm,
)
from .llm_planner import PLAN_SCHEMA, LLMPlanner, plan_schema
from .memory import ChatMemory, ChatSession
from .offline import OfflinePlanner, find_mentions
from .plan import (
    LLM_TASKS,
    Plan,
    PlanProblem,
    PlanTask,
    Resource,
    TaskCatalog,
    ValidatedPlan,
    compile_plan,
    parse_plan,
    validate_plan,
)
from .planner import Planner, PlanRequest
from .prompts import load_prompt
from .spans import SPAN_KINDS, Span, SpanParser, parse_spans, render_ref

__all__ = [
    "LLM_TASKS",
    "PLAN_SCHEMA",
    "SPAN_KINDS",
    "Agent",
    "AgentResult",
    "AgentStatus",
    "ChatMemory",
    "ChatOptions",
    "ChatSession",
    "LLMClient",
    "LLMPlanner",
    "LLMReply",
    "OfflinePlanner",
    "OpenAICompatClient",
    "Plan",
    "PlanProblem",
    "PlanRequest",
    "PlanTask",
    "Planner",
    "Resource",
    "RunOptions",
    "ScriptedLLM",
    "Span",
    "SpanParser",
    "TaskCatalog",
    "TaskOutcome",
    "ToolCall",
    "TransformersChatClient",
    "ValidatedPlan",
    "build_graph",
    "compile_plan",
    "events",
    "find_mentions",
    "load_prompt",
    "make_llm",
    "make_planner",
    "parse_plan",
    "parse_spans",
    "plan_schema",
    "render_ref",
    "validate_plan",
]
