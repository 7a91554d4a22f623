"""The central LLM agent: plans (HuggingGPT), signal spans (NExT-GPT), chat memory.

>>> from orchestrator.agent import Agent, make_llm
>>> agent = Agent(llm=make_llm("heuristic"))        # doctest: +SKIP
>>> agent.run("Generate an image of a red fox").answer  # doctest: +SKIP

See docs/agent.md for the stages, the LLM specs, the span rules and the events.
"""

from __future__ import annotations

from . import events
from .graph import Agent, AgentResult, TaskOutcome, build_graph
from .heuristic import HeuristicPlanner, extract_mentions, mentioned_resources
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
from .memory import ChatMemory, ChatSession
from .plan import (
    LLM_TASKS,
    Plan,
    PlanTask,
    Resource,
    TaskCatalog,
    ValidatedPlan,
    compile_plan,
    parse_plan,
    validate_plan,
)
from .prompts import load_prompt
from .spans import SPAN_KINDS, Span, SpanParser, parse_spans, render_ref

__all__ = [
    "LLM_TASKS",
    "SPAN_KINDS",
    "Agent",
    "AgentResult",
    "ChatMemory",
    "ChatOptions",
    "ChatSession",
    "HeuristicPlanner",
    "LLMClient",
    "LLMReply",
    "OpenAICompatClient",
    "Plan",
    "PlanTask",
    "Resource",
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
    "extract_mentions",
    "load_prompt",
    "make_llm",
    "mentioned_resources",
    "parse_plan",
    "parse_spans",
    "render_ref",
    "validate_plan",
]
