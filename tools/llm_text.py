"""Text tasks answered by the central LLM, as registered tools: summarization, translation, paraphrase …

Each tool's ``task`` is the HuggingGPT task name (``summarization``, ``translation`` …), so a
plan names them like any other task and they run as nodes of the one workflow. The tool reaches
the LLM client through its context (``ctx.llm``: the agent's client; outside the agent, the one
``ORCHESTRATOR_LLM`` names). With no language model configured, the tasks that can be done
honestly without one are done (an extractive summary, keywords, a word-list sentiment estimate);
the others raise :class:`~orchestrator.errors.TaskRefused`, which the agent reports per task as
``refused`` while the rest of the plan runs.

>>> from orchestrator import default_registry
>>> default_registry.get("llm.summarization").spec.task
'summarization'
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.agent.llm import LLMClient, make_llm
from orchestrator.agent.plan import LLM_TASKS
from orchestrator.agent.prompts import load_prompt
from orchestrator.errors import LLMError, TaskRefused, ToolError
from orchestrator.tool import Tool, ToolContext, tool

__all__ = ["TEXT_TOOLS", "extractive_summary", "keywords", "lexicon_sentiment", "text_tool"]


class TextTaskParams(BaseModel):
    llm: str = Field(default="", description="which LLM answers (set by the agent; part of the cache key)")
    options: dict[str, str] = Field(default_factory=dict,
                                    description="the plan's other text arguments (language: French, labels …)")


_SHARED: dict[tuple[str, str | None, str | None], LLMClient | None] = {}
"""Clients built from settings (a workflow run outside the agent), one per LLM spec."""


def _client(ctx: ToolContext) -> LLMClient | None:
    """The run's LLM (the agent's), else the one the settings name (shared), else none."""
    if ctx.llm is not None:
        return ctx.llm
    if ctx.settings is None:
        return None
    key = (ctx.settings.llm, ctx.settings.llm_base_url, ctx.settings.llm_model)
    if key not in _SHARED:
        _SHARED[key] = make_llm(ctx.settings.llm, ctx.settings)
    return _SHARED[key]


# ---------------------------------------------------------------------- what needs no model
_STOP = set("""a an and are as at be but by for from has have i if in into is it its of on or our so that the their
them then there these they this to was we were will with you your my me can could would should please want like
need help also any some such than too very just about more most other only own same which who whom what when where
why how all each both few many much not no nor off out over under again further once here above below up down
do does did doing am been being having he she his her hers him them its itself i'd i'm it's let's""".split())
_POS = set("""good great excellent amazing wonderful happy love loved like enjoy enjoyed positive best fantastic
beautiful nice pleasant brilliant success successful improve improved benefit benefits delighted glad awesome
perfect helpful hope hopeful exciting excited win wins gain gains strong""".split())
_NEG = set("""bad terrible awful poor sad hate hated dislike negative worst horrible ugly fail failed failure problem
problems crisis threat threats loss losses decline declining harm harmful damage dangerous risk risks angry
disappointed disappointing pain painful weak worse fear afraid devastating destruction""".split())


def _sentences(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"(?<=[.!?])\s+", text.strip()) if p.strip()]


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'\-]+", text)]


def extractive_summary(text: str, max_sentences: int | None = None) -> str:
    """The highest-scoring sentences (word-frequency scores), in their original order."""
    sents = _sentences(text)
    if len(sents) <= 1:
        return text.strip()
    freq = Counter(w for w in _words(text) if w not in _STOP)
    n = max_sentences or max(1, math.ceil(len(sents) / 3))
    scored = sorted(range(len(sents)), key=lambda i: (-sum(freq[w] for w in _words(sents[i]) if w not in _STOP)
                                                      / (1 + len(_words(sents[i]))) ** 0.5, i))
    return " ".join(sents[i] for i in sorted(scored[:n]))


def keywords(text: str, k: int = 8) -> list[str]:
    """The most frequent content words and two-word phrases."""
    words = _words(text)
    content = [w for w in words if w not in _STOP and len(w) > 2]
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)
             if a not in _STOP and b not in _STOP and len(a) > 2 and len(b) > 2]
    counts = Counter(content)
    for p, c in Counter(pairs).items():
        if c > 1:
            counts[p] = c + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def lexicon_sentiment(text: str) -> tuple[str, float]:
    """Positive / negative / neutral by counting words from two small lists (an estimate)."""
    words = _words(text)
    pos = sum(w in _POS for w in words)
    neg = sum(w in _NEG for w in words)
    score = (pos - neg) / max(1, pos + neg)
    return ("positive" if score > 0.2 else "negative" if score < -0.2 else "neutral"), score


def _sentiment(text: str) -> str:
    label, score = lexicon_sentiment(text)
    return f"{label} (word-list estimate, score {score:+.2f})"


OFFLINE: dict[str, Callable[[str], str]] = {
    "summarization": extractive_summary,
    "keyword-extraction": lambda text: ", ".join(keywords(text)) or "(no keywords found)",
    "sentiment-analysis": _sentiment,
}
"""The text tasks done without a model when no LLM is configured."""


# ---------------------------------------------------------------------- the tools
def text_tool(task: str, description: str) -> Tool:
    """The tool ``llm.<task>`` that answers ``task`` with the run's LLM (offline: see :data:`OFFLINE`)."""
    name = f"llm.{task.replace('-', '_')}"

    async def run(text: str, *, params: TextTaskParams, ctx: ToolContext) -> str:
        llm = _client(ctx)
        if llm is None:
            offline = OFFLINE.get(task)
            if offline is None:
                raise TaskRefused(f"{task} needs a language model and none is configured (run with --llm "
                                  "openai:<model>@<url>, ollama:<model> or transformers:<model>)", tool=name)
            return offline(str(text))
        prompt = load_prompt("text_task").render(task=task, description=description)
        user = _user_message(str(text), params.options)
        try:
            reply = await llm.achat([{"role": "system", "content": prompt}, {"role": "user", "content": user}],
                                    temperature=0.0)
        except LLMError as exc:
            raise ToolError(f"the LLM could not do {task}: {exc.message}", tool=name) from exc
        ctx.provenance["llm"] = params.llm or llm.name
        return reply.text.strip()

    run.__name__ = name.replace(".", "_")
    return tool(name, task=task, description=description + " (answered by the LLM)",
                inputs={"text": "text"}, outputs={"text": "text"}, params=TextTaskParams)(run)


def _user_message(text: str, options: Mapping[str, Any]) -> str:
    if not options:
        return text
    return "\n".join(f"{k}: {v}" for k, v in options.items()) + "\n\n" + text


TEXT_TOOLS: tuple[Tool, ...] = tuple(text_tool(task, desc) for task, desc in LLM_TASKS.items())
"""One tool per LLM text task (registered in the default registry on import)."""
