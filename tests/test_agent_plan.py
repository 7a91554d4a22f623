"""Plan parsing (as real LLMs write plans), validation against the registry, compilation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from orchestrator import ToolRegistry, tool
from orchestrator.agent.plan import (
    Plan,
    PlanTask,
    Resource,
    TaskCatalog,
    compile_plan,
    parse_plan,
    validate_plan,
)
from orchestrator.artifacts import Modality
from orchestrator.errors import PlanError
from tools.llm_text import TEXT_TOOLS

DEMO = Path(__file__).resolve().parent / "data" / "hugginggpt" / "demo_parse_task.json"

reg = ToolRegistry()


class NoP(BaseModel):
    pass


@tool("p.caption", task="image-to-text", description="Caption an image.", inputs={"image": "image"},
      outputs={"text": "text"}, register=False)
def _caption(image: object) -> str:
    return "a caption"


@tool("p.detect", task="object-detection", description="Detect objects.", inputs={"image": "image"},
      outputs={"image": "image", "labels": "json"}, register=False)
def _detect(image: object) -> dict:
    return {"image": image, "labels": []}


@tool("p.vqa", task="visual-question-answering", description="Answer about an image.",
      inputs={"image": "image", "text": "text"}, outputs={"text": "text"}, register=False)
def _vqa(image: object, text: str) -> str:
    return "three"


@tool("p.t2i", task="text-to-image", description="Draw.", inputs={"text": "text"}, outputs={"image": "image"},
      register=False)
def _t2i(text: str) -> object:
    return None


@tool("p.i2i", task="image-to-image", description="Edit.", inputs={"image": "image", "prompt": {"modality": "text", "optional": True}},
      outputs={"image": "image"}, register=False)
def _i2i(image: object, prompt: str | None = None) -> object:
    return image


@tool("p.t2v", task="text-to-video", description="Film.", inputs={"text": "text"}, outputs={"video": "video"},
      register=False)
def _t2v(text: str) -> object:
    return None


@tool("p.tts", task="text-to-speech", description="Speak.", inputs={"text": "text"}, outputs={"audio": "audio"},
      register=False)
def _tts(text: str) -> object:
    return None


@tool("p.stitch", task="image-stitcher", description="Stitch.", inputs={"images": {"modality": "image", "many": True}},
      outputs={"image": "image"}, register=False)
def _stitch(images: list) -> object:
    return images[0]


for _t in (_caption, _detect, _vqa, _t2i, _i2i, _t2v, _tts, _stitch, *TEXT_TOOLS):
    reg.register(_t)
CATALOG = TaskCatalog(reg)


def res(*names: str) -> dict[str, Resource]:
    from orchestrator.agent.plan import resource_modality

    return {n: Resource(n, resource_modality(n) or Modality.TEXT) for n in names}


def demo_plans() -> list[tuple[str, str]]:
    msgs = json.loads(DEMO.read_text())
    return [(msgs[i]["content"], msgs[i + 1]["content"]) for i in range(0, len(msgs), 2)]


def test_every_hugginggpt_demo_plan_parses() -> None:
    expected = [9, 6, 4, 2, 3, 2]
    for (request, answer), n in zip(demo_plans(), expected, strict=True):
        plan = parse_plan(answer)
        assert len(plan.tasks) == n, request
        assert [t.id for t in plan.tasks] == list(range(n))
    sheep = parse_plan(demo_plans()[0][1])
    assert sheep.tasks[2].args == {"image": "<GENERATED>-1", "text": "How many sheep in the picture"}
    assert sheep.tasks[2].refs() == [("image", 1)]
    similar = parse_plan(demo_plans()[1][1])
    assert similar.tasks[3].args["text"] == "<GENERATED>-0"  # "<GENERATED-0>" normalized


def test_demo_plans_validate_against_the_tools_that_exist() -> None:
    (_, sheep), (_, similar), (_, doc), *_ = demo_plans()
    vplan, problems = validate_plan(parse_plan(sheep), CATALOG, res("e1.jpg", "e2.png", "e3.jpg"))
    assert problems == [] and vplan is not None
    assert vplan.tasks[2].deps == [1] and vplan.tasks[2].inputs["image"][0].task == 1
    vplan, problems = validate_plan(parse_plan(similar), CATALOG, res("/e.jpg"))
    assert problems == [], problems
    assert vplan.tasks[5].deps == [0]  # derived from <GENERATED-0>
    _, problems = validate_plan(parse_plan(doc), CATALOG, res("/images/e.jpeg"))
    joined = "\n".join(map(str, problems))
    assert "task 0: unknown task 'document-question-answering'" in joined
    assert "'/images/e.jpg' is not among the user's resources" in joined  # the demo's typo is caught


@pytest.mark.parametrize("text", [
    'Sure! Here is the plan:\n```json\n[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a cat"}},]\n```',
    "[{'task': 'text-to-image', 'id': '0', 'dep': -1, 'args': {'text': 'a cat'}}]",
    '{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a cat"}}]',
    '[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a cat"}}}} ]',
    '[{"task": "text-to-image", "id": 0, "dep": "-1", "args": {"text": "a cat"}',
    'The plan is {"tasks": [{"task": "text-to-image", "id": 0, "args": {"text": "a cat"}}], "notes": []}.',
])
def test_malformed_plans_as_llms_write_them(text: str) -> None:
    plan = parse_plan(text)
    assert [(t.task, t.id, t.dep, t.args) for t in plan.tasks] == [("text-to-image", 0, [-1], {"text": "a cat"})]


def test_unclosed_task_followed_by_another() -> None:
    plan = parse_plan('[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a"}, '
                      '{"task": "image-to-text", "id": 1, "dep": [0], "args": {"image": "<GENERATED-0>"}}]')
    assert [t.task for t in plan.tasks] == ["text-to-image", "image-to-text"]
    assert plan.tasks[1].args["image"] == "<GENERATED>-0"


def test_empty_and_unparseable() -> None:
    assert parse_plan("[]").tasks == []
    with pytest.raises(PlanError, match="no task plan found"):
        parse_plan("I would rather chat about the weather.")


ARG = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<>"), max_size=30),
    st.integers(0, 5).map(lambda k: f"<GENERATED>-{k}"),
)
TASK = st.builds(
    lambda task, deps, args: {"task": task, "dep": deps, "args": args},
    st.sampled_from(["text-to-image", "image-to-text", "text-to-speech", "object-detection"]),
    st.lists(st.integers(-1, 5), max_size=3),
    st.dictionaries(st.sampled_from(["text", "image", "audio", "video"]), ARG, max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(TASK, max_size=6), st.sampled_from(["plain", "prose", "fence", "nobrackets", "stray", "oldref"]))
def test_parse_roundtrips_through_llm_noise(tasks: list[dict], noise: str) -> None:
    for i, t in enumerate(tasks):
        t["id"] = i
    text = json.dumps(tasks)
    if noise == "prose":
        text = f"Here you go:\n{text}\nLet me know!"
    elif noise == "fence":
        text = f"```json\n{text}\n```"
    elif noise == "nobrackets" and tasks:
        text = text[1:-1]
    elif noise == "stray" and tasks:
        text = text.replace("}}", "}} }}")
    elif noise == "oldref":
        text = text.replace("<GENERATED>-", "<GENERATED-").replace('-0"', '-0>"')
    plan = parse_plan(text)
    assert [(t.task, t.id) for t in plan.tasks] == [(t["task"], t["id"]) for t in tasks]
    for parsed, original in zip(plan.tasks, tasks, strict=True):
        assert set(parsed.args) == set(original["args"])
        for key, value in original["args"].items():
            assert parsed.args[key].strip() == value.strip() or parsed.args[key] == value.strip()


def test_validation_problems_are_precise() -> None:
    plan = Plan(tasks=[
        PlanTask(task="text-to-image", id=0, args={"text": "a cat"}),
        PlanTask(task="text-to-speech", id=1, args={"text": "<GENERATED>-0"}),     # image is not text
        PlanTask(task="image-to-txt", id=2, args={"image": "cat.png"}),            # typo
        PlanTask(task="image-to-text", id=3, args={"image": "dog.png"}),           # missing resource
        PlanTask(task="visual-question-answering", id=4, args={"image": "cat.png"}),  # no question
        PlanTask(task="image-to-text", id=5, args={"image": "<GENERATED>-6"}),     # cycle 5 <-> 6
        PlanTask(task="image-to-image", id=6, args={"image": "<GENERATED>-7", "prompt": "<GENERATED>-5"}),
        PlanTask(task="text-to-image", id=7, args={"text": "<GENERATED>-9"}),      # no task 9
    ])
    vplan, problems = validate_plan(plan, CATALOG, res("cat.png"))
    assert vplan is None
    text = "\n".join(map(str, problems))
    by_task = {p.task_id: p for p in problems}
    assert by_task[2].field == "task" and by_task[3].field == "args.image" and by_task[7].field == "args.text"
    assert by_task[2].message.startswith("unknown task 'image-to-txt'")  # typed: no "task 2:" prefix to parse
    assert "task 1: argument 'text' needs text, but <GENERATED>-0 is the output of task 0 (text-to-image), which produces image" in text
    assert "task 2: unknown task 'image-to-txt' (did you mean 'image-to-text'" in text
    assert "task 3: image argument 'image' = 'dog.png' is not among the user's resources (available image resources: cat.png)" in text
    assert "task 4: visual-question-answering needs a text argument ('text')" in text
    assert "task 7: argument 'text' refers to <GENERATED>-9, but there is no task 9" in text
    assert "tasks [5, 6] depend on each other in a cycle" in text


def test_many_ports_llm_tasks_and_pinned_tools() -> None:
    plan = Plan(tasks=[
        PlanTask(task="p.t2i", id=0, args={"text": "left"}),
        PlanTask(task="image-stitcher", id=1, args={"image": ["<GENERATED>-0", "b.png"]}),
        PlanTask(task="summarization", id=2, args={"text": "long text"}),
        PlanTask(task="Text-to-Speech", id=3, args={"text": "<GENERATED>-2"}),
        PlanTask(task="translation", id=4, args={"image": "b.png"}),
    ])
    vplan, problems = validate_plan(plan, CATALOG, res("b.png"))
    assert str(problems[0]) == ("task 4: translation is answered by the LLM from text; it cannot take image "
                                "(add a task that turns the image into text first)")
    del plan.tasks[4]
    vplan, problems = validate_plan(plan, CATALOG, res("b.png"))
    assert vplan is not None, problems
    assert vplan.tasks[0].pinned and vplan.tasks[0].tool == "p.t2i"
    assert [b.kind for b in vplan.tasks[1].inputs["images"]] == ["generated", "resource"]
    assert vplan.tasks[2].kind == "llm" and vplan.tasks[3].deps == [2] and vplan.tasks[3].task == "text-to-speech"


def test_compile_plan_builds_an_engine_workflow() -> None:
    plan = parse_plan(demo_plans()[0][1])
    vplan, _ = validate_plan(plan, CATALOG, res("e1.jpg", "e2.png", "e3.jpg"))
    assert vplan is not None
    compiled = compile_plan(vplan, name="sheep")
    wf = compiled.workflow
    assert {n.id for n in wf.nodes} == {f"t{i}" for i in range(9)}
    assert wf.nodes[2].inputs == {"image": "t1.image", "text": "t2_text"}
    assert compiled.run_inputs["t2_text"] == "How many sheep in the picture"
    assert {i.name for i in wf.inputs if i.modality is Modality.IMAGE} == {"e1_jpg", "e2_png", "e3_jpg"}
    assert ("t8_text", "t8.text") in [(o.name, o.source) for o in wf.outputs]
    wf.compile(registry=reg)  # the engine accepts it
    with pytest.raises(PlanError, match="not compiled with it"):
        compile_plan(vplan, task_ids=[2])  # task 2 needs task 1's image: one plan, one workflow


def test_text_tasks_compile_into_the_same_workflow() -> None:
    plan = Plan(tasks=[
        PlanTask(task="image-to-text", id=0, args={"image": "a.png"}),
        PlanTask(task="translation", id=1, args={"text": "<GENERATED>-0", "language": "French"}),
        PlanTask(task="text-to-speech", id=2, args={"text": "<GENERATED>-1"}),
    ])
    vplan, problems = validate_plan(plan, CATALOG, res("a.png"))
    assert vplan is not None, problems
    assert vplan.tasks[1].kind == "llm" and vplan.tasks[1].options == {"language": "French"}
    assert not vplan.warnings  # the option is the text task's, not an ignored argument
    wf = compile_plan(vplan).workflow
    assert [n.tool for n in wf.nodes] == ["p.caption", "llm.translation", "p.tts"]
    assert wf.nodes[1].inputs == {"text": "t0.text"} and wf.nodes[2].inputs == {"text": "t1.text"}


def test_the_plan_schema_admits_the_catalogs_tasks_with_their_own_ports() -> None:
    import jsonschema

    from orchestrator.agent.llm_planner import plan_schema

    schema = plan_schema(CATALOG, {"e1.jpg": Modality.IMAGE}, max_tasks=2, max_arg_chars=500)

    def ok(tasks: list[dict]) -> bool:
        try:
            jsonschema.validate({"tasks": tasks, "refusal": None}, schema)
        except jsonschema.ValidationError:
            return False
        return True

    caption = {"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "e1.jpg"}}
    speak = {"task": "text-to-speech", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}
    assert ok([caption, speak]) and ok([])
    assert not ok([caption, speak, speak])  # max_tasks
    assert not ok([{**caption, "task": "image-to-poem"}])  # not a task of the catalog
    assert not ok([{**caption, "args": {"image": "e1.jpg", "audio": "x.wav"}}])  # not a port of that task
    assert not ok([{**caption, "args": {}}])  # a required port left out
    assert not ok([{**caption, "args": {"image": "e2.jpg"}}])  # not one of the user's images
    assert ok([{**caption, "args": {"image": "<GENERATED>-3"}}])
    assert not ok([{**speak, "args": {"text": "x" * 501}}])  # max_plan_arg_chars (500)


def test_a_task_that_depends_on_itself_loses_that_dependency() -> None:
    plan = parse_plan('[{"task": "image-to-text", "id": 0, "dep": [0], "args": {"image": "e1.jpg"}}]')
    assert plan.tasks[0].dep == [-1]
