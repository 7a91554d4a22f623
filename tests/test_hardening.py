"""Hardening below the HTTP layer: the registry's start-up race, work-amplification
limits (plans, spans, sub-workflow expansion, deep JSON) and media decode limits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
from media_factory import black_mp4, silent_flac

from orchestrator.agent import TaskCatalog, parse_plan, validate_plan
from orchestrator.artifacts import Limits, LocalArtifactStore
from orchestrator.errors import ArtifactTooLarge, DownloadError, PlanError, WorkflowValidationError
from orchestrator.registry import default_registry
from orchestrator.settings import Settings
from orchestrator.workflow import Workflow
from tools.downloaders import fetch

ROOT = Path(__file__).resolve().parent.parent


def test_registry_lookups_racing_the_first_load_all_find_the_tool() -> None:
    """Many threads asking a fresh registry for a built-in tool at once all get it
    (the loaded flag used to turn true before the tool modules were imported)."""
    script = textwrap.dedent("""
        import threading
        from orchestrator.registry import default_registry

        barrier = threading.Barrier(32)
        missing = []

        def look() -> None:
            barrier.wait()
            try:
                default_registry.get("text.template")
            except Exception as exc:
                missing.append(repr(exc))

        threads = [threading.Thread(target=look) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(missing), missing[:1])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 "), out.stdout


# ---------------------------------------------------------------------- workflow expansion
def _nested_doc(levels: int, fanout: int) -> dict[str, object]:
    """A small document whose every level runs the next one ``fanout`` times: fanout**levels nodes."""
    leaf = {"name": "leaf", "inputs": [{"name": "text", "modality": "text"}],
            "nodes": [{"id": "t", "tool": "text.template", "params": {"template": "{text}!"},
                       "inputs": {"texts": "text"}}],
            "outputs": [{"name": "text", "source": "t.text"}]}
    doc = leaf
    for level in range(levels):
        doc = {"name": f"l{level}", "inputs": [{"name": "text", "modality": "text"}],
               "nodes": [{"id": f"n{i}", "tool": "workflow:inner", "inputs": {"text": "text"}} for i in range(fanout)],
               "outputs": [{"name": "text", "source": "n0.text"}],
               "subworkflows": {"inner": doc}}
    return doc


def test_nested_subworkflows_over_the_node_limit_are_refused_before_expanding() -> None:
    doc = _nested_doc(16, 3)  # 3**16 = 43 million nodes from a few kilobytes
    assert len(json.dumps(doc)) < 8000
    started = time.monotonic()
    with pytest.raises(WorkflowValidationError, match="max_workflow_nodes"):
        Workflow.from_dict(doc).compile(settings=Settings(max_workflow_nodes=1000))
    assert time.monotonic() - started < 5
    # under the limit the same shape compiles: 3**4 = 81 nodes
    compiled = Workflow.from_dict(_nested_doc(4, 3)).compile(settings=Settings(max_workflow_nodes=81))
    assert len(compiled.plan.nodes) == 81
    with pytest.raises(WorkflowValidationError, match="max_workflow_nodes"):
        Workflow.from_dict(_nested_doc(4, 3)).compile(settings=Settings(max_workflow_nodes=80))


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    with pytest.raises(WorkflowValidationError, match="max_workflow_depth"):
        Workflow.from_dict(_nested_doc(6, 1)).compile(settings=Settings(max_workflow_depth=5))
    assert len(Workflow.from_dict(_nested_doc(5, 1)).compile(settings=Settings(max_workflow_depth=5)).plan.nodes) == 1


def test_a_workflow_generating_more_media_than_the_limit_is_refused() -> None:
    doc = {"name": "many", "inputs": [{"name": "text", "modality": "text"}, {"name": "img", "modality": "image"}],
           "nodes": [{"id": f"g{i}", "tool": "image.grayscale", "inputs": {"image": "img"}} for i in range(5)]
           + [{"id": "t", "tool": "text.template", "inputs": {"texts": "text"}}],
           "outputs": [{"name": "image", "source": "g0.image"}]}
    with pytest.raises(WorkflowValidationError, match="max_run_media"):
        Workflow.from_dict(doc).compile(settings=Settings(max_run_media=4))
    assert len(Workflow.from_dict(doc).compile(settings=Settings(max_run_media=5)).plan.nodes) == 6


# ---------------------------------------------------------------------- plans
def test_thousands_of_unclosed_task_fragments_are_a_plan_error_not_a_recursion_error() -> None:
    for text in ('{"task": ' * 20_000, "[" * 20_000 + '{"task": "text-to-image"}', '{"task": "x", "args": ' * 20_000):
        with pytest.raises(PlanError, match="too deeply"):
            parse_plan(text)


def test_a_plan_with_more_tasks_than_the_limit_is_refused_naming_the_limit() -> None:
    tasks = [{"task": "text-to-image", "id": i, "dep": [-1], "args": {"text": f"a cat number {i}"}} for i in range(1000)]
    plan = parse_plan(json.dumps(tasks))
    assert len(plan.tasks) == 1000
    catalog = TaskCatalog(default_registry)
    vplan, problems = validate_plan(plan, catalog, max_tasks=64)
    assert vplan is None and "max_plan_tasks" in str(problems[0]) and "1000" in str(problems[0])
    assert problems[0].task_id is None and problems[0].field == "tasks"
    small = parse_plan(json.dumps(tasks[:3]))
    vplan, problems = validate_plan(small, catalog, max_tasks=3)
    assert vplan is not None and problems == []


# ---------------------------------------------------------------------- URL download deadline
def test_download_deadline_covers_a_server_trickling_its_headers() -> None:
    """Each header byte arrives well within the read timeout, so only an overall deadline
    that also covers the wait for the headers stops the exchange."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n")
                while not stop.is_set():
                    conn.sendall(b"X-Pad: " + b"a" * 8 + b"\r\n")
                    time.sleep(0.2)
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    settings = SimpleNamespace(allow_private_urls=True, max_artifact_bytes=1 << 20, download_timeout_seconds=1.0,
                               download_deadline_seconds=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="overall deadline"):
            fetch(f"http://127.0.0.1:{port}/slow.png", modality="image", settings=settings)
        assert time.monotonic() - started < 4
    finally:
        stop.set()
        listener.close()
        thread.join(5)


# ---------------------------------------------------------------------- media bombs
def test_audio_that_decodes_past_the_sample_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = silent_flac(8, 96_000, 60)  # ~46 million samples in a few dozen KiB
    assert len(bomb) < 200_000
    store = LocalArtifactStore(tmp_path / "a", limits=Limits())
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactTooLarge, match="max_audio_samples") as info:
            store.put(bomb, modality="audio")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.context["limit"] == "max_audio_samples"
    assert peak < 20 << 20  # refused from the header: nothing was decoded
    assert store.ids() == []  # nothing stored
    small = store.put(silent_flac(2, 16_000, 2), modality="audio")
    assert small.meta.channels == 2 and small.meta.duration == 2.0


def test_video_over_the_pixel_limit_is_refused_and_uploads_stream_frame_by_frame(tmp_path: Path) -> None:
    bomb = black_mp4(1024, 40)  # 42 million pixels: 126 MB of RGB frames if held at once
    store = LocalArtifactStore(tmp_path / "v", limits=Limits(max_video_pixels=20_000_000))
    with pytest.raises(ArtifactTooLarge, match="max_video_pixels"):
        store.put(bomb, modality="video")
    assert store.ids() == []
    roomy = LocalArtifactStore(tmp_path / "w", limits=Limits())
    ref = roomy.put(bomb, modality="video")
    assert (ref.meta.width, ref.meta.height, ref.meta.frames) == (1024, 1024, 40)
    assert roomy.load(ref.id).frames.shape == (40, 1024, 1024, 3)
    # the peak resident memory the conversion adds, measured in a fresh process (decoding whole: ~330 MiB)
    clip = tmp_path / "bomb.mp4"
    clip.write_bytes(bomb)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_media_memory.py"), "--measure", "video",
                          str(clip), "streamed"], capture_output=True, text=True, timeout=120, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["outcome"] == "admitted" and measured["peak_mib"] < 100, measured


def test_an_llm_plan_over_the_task_limit_then_a_bracket_bomb_runs_nothing(local_store: LocalArtifactStore) -> None:
    """A scripted LLM (real HTTP) answers 1,000 tasks, then 20,000 unclosed task fragments:
    no tool runs, and the reasons name the limit and the nesting, not a RecursionError."""
    from llm_server import ScriptedLLMServer
    from test_agent_graph import agent_with, by_stage, http_llm

    many = json.dumps([{"task": "text-to-image", "id": i, "dep": [-1], "args": {"text": f"cat {i}"}}
                       for i in range(1000)])
    bomb = '{"task": ' * 20_000
    with ScriptedLLMServer([by_stage(plan=[many, bomb], respond=lambda b: b["messages"][-1]["content"][-600:])] * 3,
                           chunk_chars=1 << 16) as srv:
        agent = agent_with(http_llm(srv), local_store, max_repairs=1, settings=Settings(max_plan_tasks=64))
        result = agent.run("draw a thousand cats")
    assert result.status == "no_tools" and not result.tasks
    repaired = [e for e in result.events if getattr(e, "type", "") == "plan_repaired"]
    assert len(repaired) == 1 and "max_plan_tasks" in repaired[0].problems[0]
    assert "too deeply" in result.answer and "RecursionError" not in result.answer
    assert not any(getattr(e, "type", "") == "run_started" for e in result.events)


def test_spans_per_message_come_from_the_settings(local_store: LocalArtifactStore) -> None:
    from test_agent_graph import agent_with

    assert agent_with("heuristic", local_store, settings=Settings(max_spans_per_message=2)).max_spans_per_message == 2
    assert agent_with("heuristic", local_store, settings=Settings(), max_spans_per_message=1).max_spans_per_message == 1
