"""Chat sessions in the store's records (embedded and Redis), trimming, "the previous image"; prompts."""

from __future__ import annotations

import pytest

import orchestrator.agent as agent_pkg
from orchestrator.agent.memory import ChatMemory
from orchestrator.agent.prompts import list_prompts, load_prompt
from orchestrator.artifacts import Modality
from orchestrator.errors import ConfigError


def test_sessions_persist_by_id_across_memory_objects(store) -> None:  # noqa: ANN001 - fixture
    from PIL import Image

    img1 = store.put(Image.new("RGB", (4, 4), "red"))
    img2 = store.put(Image.new("RGB", (4, 4), "blue"))
    clip = store.put("not audio, just text")
    mem = ChatMemory(store)
    mem.append("s1", "user", "draw a red square", [img1], origin="user upload")
    mem.append("s1", "assistant", "here", [img2, clip], origin="text-to-image")
    other = ChatMemory(store)  # another process would see the same
    session = other.load("s1")
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert [(a.alias, a.ref.id) for a in session.artifacts] == [("image-1", img1.id), ("image-2", img2.id),
                                                                 ("text-1", clip.id)]
    assert other.last_artifact(session, "image").ref.id == img2.id
    found = other.resolve_references(session, "make the previous image darker, and image-1 brighter")
    assert found["previous image"].alias == "image-2" and found["image-1"].alias == "image-1"
    assert "s1" in other.list_sessions()
    assert other.context(session)[-1]["content"] == "here\n[media: image-2, text-1]"
    assert other.delete("s1") and other.load("s1").messages == []


def test_history_is_trimmed_to_the_token_budget_but_media_stay_resolvable(local_store) -> None:  # noqa: ANN001
    from PIL import Image

    mem = ChatMemory(local_store, token_budget=60)
    ref = local_store.put(Image.new("RGB", (2, 2)))
    mem.append("s", "assistant", "the picture", [ref])
    for i in range(10):
        mem.append("s", "user", f"message number {i} " + "words " * 10)
    session = mem.load("s")
    assert session.trimmed > 0 and len(session.messages) < 11
    assert session.messages[-1].content.startswith("message number 9")
    assert sum(len(m.content) // 4 + 4 for m in session.messages) <= 60 or len(session.messages) == 1
    assert mem.last_artifact(session, Modality.IMAGE).ref.id == ref.id  # still resolvable
    assert len(mem.context(session, budget=20)) == 1


def test_prompts_are_versioned_files() -> None:
    names = list_prompts()
    assert {"planner", "repair", "respond", "text_task", "chat_spans", "select"} <= set(names)
    p = load_prompt("planner")
    text = p.render(tasks="- text-to-image (text:text) -> (image:image)", resources="- a.png: image")
    assert "$tasks" not in text and "- a.png: image" in text and '"<GENERATED>-ID"' not in text
    assert p.id == "planner.v2" and not text.startswith("<!--")  # the newest version by default
    assert load_prompt("planner", 1).id == "planner.v1"
    with pytest.raises(ConfigError, match="no version 9"):
        load_prompt("planner", 9)
    with pytest.raises(ConfigError, match="no prompt named"):
        load_prompt("nope")


def test_public_names() -> None:
    for name in agent_pkg.__all__:
        assert hasattr(agent_pkg, name), name
    assert callable(agent_pkg.make_llm) and agent_pkg.Agent.run and agent_pkg.Agent.achat_stream
    assert isinstance(agent_pkg.make_planner(None), agent_pkg.OfflinePlanner)
    assert isinstance(agent_pkg.make_planner("offline"), agent_pkg.Planner)
    llm_planner = agent_pkg.make_planner("ollama:qwen2.5:7b")
    assert isinstance(llm_planner, agent_pkg.LLMPlanner) and isinstance(llm_planner, agent_pkg.Planner)


def test_the_agent_package_has_no_import_cycles() -> None:
    """Every import between the agent's modules, at module level or inside functions (typing-only
    imports aside), forms a graph without cycles."""
    import ast
    from pathlib import Path

    root = Path(agent_pkg.__file__).parent
    modules = {p.stem: p for p in root.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, ast.ImportFrom):
                continue
            target = node.module or ""
            if node.level == 1:
                deps.add(target.split(".")[0])
            elif target.startswith("orchestrator.agent."):
                deps.add(target.split(".")[2])
        graph[name] = {d for d in deps if d in modules}
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph[n]):
            assert state.get(d) != 1, f"import cycle: {' -> '.join([*path, n, d])}"
            if d not in state:
                visit(d, [*path, n])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert graph["chat"] and "graph" not in graph["chat"] and "llm" not in graph["planner"]
