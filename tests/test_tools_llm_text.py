"""The LLM text tasks as tools: they ask the run's LLM through the tool context; offline they do what
they honestly can and refuse the rest."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator import ToolRegistry
from orchestrator.workflow import Workflow
from orchestrator.agent import ScriptedLLM
from orchestrator.errors import TaskRefused
from orchestrator.registry import default_registry
from orchestrator.settings import Settings
from orchestrator.tool import ToolContext
from tools.llm_text import TEXT_TOOLS, extractive_summary, keywords, lexicon_sentiment

TEXT = ("Climate change threatens polar bears. Sea ice melts earlier every year. "
        "Bears need sea ice to hunt seals. Without sea ice, polar bears starve.")
OFFLINE = Settings(llm="offline")


def test_every_text_task_is_a_registered_tool_under_its_task_name() -> None:
    from orchestrator.agent import LLM_TASKS

    assert {t.spec.task for t in TEXT_TOOLS} == set(LLM_TASKS)
    assert default_registry.get("llm.translation").spec.task == "translation"


def test_text_tools_ask_the_llm_in_the_context_with_the_plan_options() -> None:
    llm = ScriptedLLM(["  Bonjour tout le monde  "])
    out = default_registry.get("llm.translation").call(
        {"text": "Hello everyone"}, {"llm": "scripted", "options": {"language": "French"}}, ToolContext(llm=llm))
    assert out == {"text": "Bonjour tout le monde"}
    messages, _ = llm.calls[0]
    assert "translation" in messages[0]["content"] and messages[-1]["content"] == "language: French\n\nHello everyone"


def test_offline_text_tools_do_what_they_honestly_can_and_refuse_the_rest() -> None:
    ctx = ToolContext(settings=OFFLINE)
    summary = default_registry.get("llm.summarization").call({"text": TEXT}, None, ctx)["text"]
    assert summary in TEXT and len(summary) < len(TEXT)
    assert "sea ice" in keywords(TEXT) and "polar bears" in keywords(TEXT)
    assert lexicon_sentiment("I love this wonderful, great product")[0] == "positive"
    assert extractive_summary("One sentence only") == "One sentence only"
    with pytest.raises(TaskRefused, match="needs a language model"):
        default_registry.get("llm.paraphrase").call({"text": TEXT}, None, ctx)


def test_a_refused_text_node_is_reported_as_such_by_the_engine(tmp_path) -> None:
    from orchestrator.artifacts import LocalArtifactStore

    reg = ToolRegistry()
    for t in TEXT_TOOLS:
        reg.register(t)
    wf = (Workflow("texts").add_input("text", "text")
          .add_node("sum", "llm.summarization", inputs={"text": "text"})
          .add_node("fr", "llm.translation", inputs={"text": "sum.text"})
          .add_output("summary", "sum.text").add_output("french", "fr.text"))
    compiled = wf.compile(registry=reg, settings=OFFLINE)
    store = LocalArtifactStore(tmp_path)

    async def events_of(**options: object) -> list:
        return [e async for e in compiled.astream({"text": TEXT}, store=store, cache=False, **options)]

    offline = asyncio.run(events_of())
    failed = next(e for e in offline if e.type == "node_failed")
    assert failed.node == "fr" and failed.error["type"] == "TaskRefused"
    assert offline[-1].type == "run_finished" and "summary" in offline[-1].outputs  # the rest ran
    # with an LLM in the run, the same node answers
    answered = asyncio.run(events_of(llm=ScriptedLLM(["Sea ice melts; bears starve.", "Le climat menace les ours."])))
    assert answered[-1].type == "run_finished" and answered[-1].status == "succeeded"
    assert store.load(answered[-1].outputs["french"]) == "Le climat menace les ours."
