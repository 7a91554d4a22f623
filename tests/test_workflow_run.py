"""Running workflows: concurrency, failure isolation, retries, timeouts, cancellation,
cache, events, inputs — against both artifact stores."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
from langgraph.graph import END, START, StateGraph

from orchestrator import ArtifactRef, Audio, RedisArtifactStore
from orchestrator.errors import WorkflowError, WorkflowInputError
from orchestrator.workflow import CompiledWorkflow, Workflow
from orchestrator.workflow._engine import GraphState

import workflow_tools
from workflow_tools import registry


def branches(delay: float, tool: str = "t.upper") -> Workflow:
    return (
        Workflow("branches")
        .add_input("text", "text")
        .add_node("left", tool, {"delay": delay, "suffix": "<"}, inputs={"text": "text"})
        .add_node("right", tool, {"delay": delay, "suffix": ">"}, inputs={"text": "text"})
        .add_node("both", "t.join")
        .connect("left.text", "both.texts")
        .connect("right.text", "both.texts")
        .add_output("joined", "both.text")
    )


@pytest.mark.parametrize("tool", ["t.upper", "t.aupper"])
def test_independent_branches_run_concurrently(store, tool):
    compiled = branches(0.4, tool).compile(registry=registry)
    started = time.perf_counter()
    result = compiled.run({"text": "hi"}, store=store, cache=False)
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded"
    assert result.load("joined") == "HI< + HI>"
    assert elapsed < 0.75, f"two 0.4 s branches took {elapsed:.2f}s: not concurrent"


def test_failed_node_fails_only_its_dependents(store):
    wf = (
        Workflow("isolation")
        .add_input("text", "text")
        .add_node("bad", "t.fail", inputs={"text": "text"})
        .add_node("after_bad", "t.upper", inputs={"text": "bad.text"})
        .add_node("good", "t.upper", {"delay": 0.1}, inputs={"text": "text"})
        .add_node("after_good", "t.upper", inputs={"text": "good.text"})
        .add_output("bad_out", "after_bad.text")
        .add_output("good_out", "after_good.text")
    )
    result = wf.compile(registry=registry).run({"text": "x"}, store=store, cache=False)
    assert result.status == "partial"
    assert result.load("good_out") == "X!!"
    assert "bad_out" not in result.outputs
    assert "upstream node 'bad' failed" in result.errors["bad_out"]
    assert "cannot handle 'x'" in result.errors["bad"]
    assert result.nodes["after_bad"].status == "skipped"
    with pytest.raises(WorkflowError, match="output 'bad_out' does not exist"):
        result.load("bad_out")
    types = [(e.type, e.node) for e in result.events]
    assert ("node_failed", "bad") in types and ("node_skipped", "after_bad") in types


def test_retries_then_success_and_exhaustion(store):
    key = f"k{time.time_ns()}"
    ok = Workflow("r").add_input("t", "text").add_node("f", "t.flaky", {"key": key, "failures": 2}, inputs={"text": "t"}, retries=2).add_output("o", "f.text")
    result = ok.compile(registry=registry).run({"t": "v"}, store=store, cache=False)
    assert result.load("o") == "v (after 2 failures)"
    assert [e.attempt for e in result.events if e.type == "node_started"] == [1, 2, 3]

    key2 = key + "b"
    bad = Workflow("r").add_input("t", "text").add_node("f", "t.flaky", {"key": key2, "failures": 5}, inputs={"text": "t"}, retries=1).add_output("o", "f.text")
    result = bad.compile(registry=registry).run({"t": "v"}, store=store, cache=False)
    assert result.status == "failed"
    failed = [e for e in result.events if e.type == "node_failed"][0]
    assert failed.attempts == 2 and "transient failure 2" in failed.error["message"]


def test_timeout_fails_the_node(store):
    wf = Workflow("t").add_input("t", "text").add_node("s", "t.sleep_async", {"seconds": 5}, inputs={"text": "t"}, timeout=0.2).add_output("o", "s.text")
    started = time.perf_counter()
    result = wf.compile(registry=registry).run({"t": "v"}, store=store, cache=False)
    assert time.perf_counter() - started < 2
    assert result.status == "failed" and "timed out after 0.2s" in result.errors["s"]


def test_cancel_stops_running_async_node_and_scheduling(store):
    wf = (
        Workflow("c").add_input("t", "text")
        .add_node("slow", "t.sleep_async", {"seconds": 10}, inputs={"text": "t"})
        .add_node("next", "t.upper", inputs={"text": "slow.text"})
        .add_output("o", "next.text")
    )
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    before = workflow_tools.calls.get("t.upper", 0)
    started = time.perf_counter()
    result = wf.compile(registry=registry).run({"t": "v"}, store=store, cache=False, cancel=cancel)
    assert time.perf_counter() - started < 3
    assert result.status == "cancelled"
    assert result.nodes["slow"].status == "cancelled"
    assert workflow_tools.calls.get("t.upper", 0) == before  # never scheduled
    assert result.events[-1].type == "run_failed" and result.events[-1].status == "cancelled"


def test_unchanged_rerun_is_fully_cached_and_one_branch_change_reruns_only_it(store):
    wf = branches(0.0)
    compiled = wf.compile(registry=registry)
    first = compiled.run({"text": "cache me"}, store=store)
    assert {n.status for n in first.nodes.values()} == {"succeeded"}

    second = compiled.run({"text": "cache me"}, store=store)
    assert {k: n.status for k, n in second.nodes.items()} == {"left": "cached", "right": "cached", "both": "cached"}
    assert second.outputs == first.outputs
    assert [e.type for e in second.events].count("node_cached") == 3

    changed = branches(0.0)
    changed.nodes[1].params["suffix"] = "}"  # right branch only
    third = changed.compile(registry=registry).run({"text": "cache me"}, store=store)
    assert {k: n.status for k, n in third.nodes.items()} == {"left": "cached", "right": "succeeded", "both": "succeeded"}
    assert third.load("joined") == "CACHE ME< + CACHE ME}"

    # a changed input invalidates everything downstream
    fourth = compiled.run({"text": "other"}, store=store)
    assert {n.status for n in fourth.nodes.values()} == {"succeeded"}
    # caching can be switched off per run
    off = compiled.run({"text": "cache me"}, store=store, cache=False)
    assert {n.status for n in off.nodes.values()} == {"succeeded"}


def test_seeded_tools_cache_only_with_a_fixed_seed(store):
    wf = Workflow("n").add_input("t", "text").add_node("n", "t.noise", inputs={"text": "t"}).add_output("a", "n.audio")
    compiled = wf.compile(registry=registry)
    r1, r2 = (compiled.run({"t": "x"}, store=store) for _ in range(2))
    assert r2.nodes["n"].status == "succeeded"  # no seed: sampled again, not cached
    assert r1.outputs["a"].id != r2.outputs["a"].id

    s1 = compiled.run({"t": "x"}, store=store, seed=7)
    s2 = compiled.run({"t": "x"}, store=store, seed=7)
    assert s2.nodes["n"].status == "cached" and s1.outputs["a"].id == s2.outputs["a"].id
    s3 = compiled.run({"t": "x"}, store=store, seed=8)
    assert s3.nodes["n"].status == "succeeded" and s3.outputs["a"].id != s1.outputs["a"].id
    # same seed, cache off: same bytes anyway
    s4 = compiled.run({"t": "x"}, store=store, seed=7, cache=False)
    assert s4.outputs["a"].id == s1.outputs["a"].id


def test_cache_survives_the_process_in_the_store(store):
    wf = Workflow("p").add_input("t", "text").add_node("u", "t.upper", inputs={"text": "t"}).add_output("o", "u.text")
    wf.compile(registry=registry).run({"t": "persist"}, store=store)
    store.cache.clear()  # as if a new process: only the backend is left
    again = Workflow.from_json(wf.to_json()).compile(registry=registry).run({"t": "persist"}, store=store)
    assert again.nodes["u"].status == "cached" and again.load("o") == "PERSIST!"


def test_events_are_typed_ordered_and_carry_refs_and_progress(store):
    wf = (
        Workflow("ev").add_input("t", "text")
        .add_node("n", "t.noise", {"seconds": 0.5}, inputs={"text": "t"})
        .add_node("d", "t.duration", inputs={"audio": "n.audio"})
        .add_output("text", "d.text").add_output("info", "d.info").add_output("audio", "n.audio")
    )
    result = wf.compile(registry=registry).run({"t": "x"}, store=store, seed=1, cache=False)
    types = [e.type for e in result.events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert [e.seq for e in result.events] == list(range(1, len(types) + 1))
    assert types.index("node_started") < types.index("node_progress") < types.index("node_finished")
    progress = [(e.step, e.total) for e in result.events if e.type == "node_progress"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    finished = {e.node: e for e in result.events if e.type == "node_finished"}
    assert finished["n"].outputs["audio"].modality == "audio" and finished["n"].seconds >= 0
    assert result.load("info") == {"seconds": 0.5, "rate": 8000}
    assert result.load("text") == "0.50s"
    # provenance is recorded in the output artifacts
    prov = store.stat(result.outputs["audio"]).meta.provenance
    assert prov.tool == "t.noise" and prov.node == "n" and prov.seed is not None and prov.params["seconds"] == 0.5
    assert prov.inputs["text"].startswith("sha256:")


async def test_astream_yields_events_live(store):
    compiled = branches(0.2, "t.aupper").compile(registry=registry)
    seen = []
    first_finish_at = None
    started = time.perf_counter()
    async for event in compiled.astream({"text": "a"}, store=store, cache=False):
        seen.append(event.type)
        if event.type == "node_finished" and first_finish_at is None:
            first_finish_at = time.perf_counter() - started
    assert seen[0] == "run_started" and seen[-1] == "run_finished"
    assert first_finish_at is not None and first_finish_at < 0.4


def test_inputs_as_objects_paths_and_refs(store, tmp_path):
    wf = Workflow("in").add_input("a", "audio").add_node("d", "t.duration", inputs={"audio": "a"}).add_output("o", "d.text")
    compiled = wf.compile(registry=registry)
    audio = Audio(np.zeros(8000, dtype=np.float32), 8000)
    assert compiled.run({"a": audio}, store=store).load("o") == "1.00s"
    ref = store.put(audio)
    assert compiled.run({"a": ref}, store=store).load("o") == "1.00s"
    assert compiled.run({"a": ref.id}, store=store).load("o") == "1.00s"
    path = tmp_path / "a.wav"
    path.write_bytes(store.get_bytes(ref))
    assert compiled.run({"a": path}, store=store).load("o") == "1.00s"
    out = compiled.run({"a": str(path)}, store=store).save("o", tmp_path)
    assert out.read_text() == "1.00s"


def test_wrong_or_missing_inputs_fail_before_any_node_runs(store, tmp_path):
    wf = (
        Workflow("img").add_input("photo", "image").add_input("t", "text")
        .add_node("u", "t.upper", inputs={"text": "t"}).add_output("o", "u.text")
    )
    compiled = wf.compile(registry=registry)
    wav = tmp_path / "sound.png"
    wav.write_bytes(store.get_bytes(store.put(Audio(np.zeros(800, dtype=np.float32), 8000))))
    before = workflow_tools.calls.get("t.upper", 0)
    with pytest.raises(WorkflowInputError) as info:
        compiled.run({"photo": wav, "t": "x"}, store=store)
    assert "input 'photo'" in str(info.value) and "declared image but the bytes are audio" in str(info.value)
    with pytest.raises(WorkflowInputError, match="input 'photo' \\(image\\) is missing"):
        compiled.run({"t": "x"}, store=store)
    with pytest.raises(WorkflowInputError, match="unknown input"):
        compiled.run({"t": "x", "photo": wav, "zzz": 1}, store=store)
    text_ref = store.put("just text")
    with pytest.raises(WorkflowInputError, match="expected image, got a text artifact"):
        compiled.run({"photo": text_ref, "t": "x"}, store=store)
    with pytest.raises(WorkflowInputError, match="is not a file"):
        compiled.run({"photo": "/no/such/file.png", "t": "x"}, store=store)
    assert workflow_tools.calls.get("t.upper", 0) == before


def test_nested_workflow_runs(store):
    inner = Workflow("inner").add_input("text", "text").add_node("a", "t.upper", inputs={"text": "text"}).add_output("r", "a.text")
    outer = (
        Workflow("outer").add_input("w", "text").add_workflow("sub", inner, inputs={"text": "w"})
        .add_node("b", "t.upper", {"suffix": "?"}, inputs={"text": "sub.r"}).add_output("o", "b.text")
    )
    assert outer.compile(registry=registry).run({"w": "x"}, store=store).load("o") == "X!?"


def _parent_of(compiled: CompiledWorkflow) -> Any:
    """A plain LangGraph graph whose one node is ``compiled``'s graph."""
    parent = StateGraph(GraphState)
    parent.add_node("ours", compiled.graph)
    parent.add_edge(START, "ours")
    parent.add_edge("ours", END)
    return parent.compile()


async def test_compiled_graph_embeds_in_a_langgraph_graph(store):
    compiled = branches(0.0).compile(registry=registry)
    ref = store.put("emb")
    # a LangGraph user passes our store (and options) through the config
    config = compiled.langgraph_config(store=store)
    out = await _parent_of(compiled).ainvoke({"inputs": {"text": ref}}, config)
    assert out["status"] == {"left": "succeeded", "right": "succeeded", "both": "succeeded"}
    assert store.load(out["refs"]["both"]["text"]) == "EMB< + EMB>"
    assert all(hasattr(r, "id") for refs in out["refs"].values() for r in refs.values())  # refs only, no payloads


def test_compiled_graph_embeds_in_a_langgraph_graph_invoked_blocking(store):
    compiled = branches(0.0).compile(registry=registry)
    ref = store.put("blk")
    out = _parent_of(compiled).invoke({"inputs": {"text": ref}}, compiled.langgraph_config(store=store))
    assert out["status"] == {"left": "succeeded", "right": "succeeded", "both": "succeeded"}
    assert store.load(out["refs"]["both"]["text"]) == "BLK< + BLK>"


def test_sync_run_works_inside_a_running_loop(store):
    compiled = branches(0.0).compile(registry=registry)

    async def inside():
        return compiled.run({"text": "loop"}, store=store, cache=False)

    assert asyncio.run(inside()).load("joined") == "LOOP! + LOOP!".replace("!", "<", 1).replace("!", ">", 1)


def test_many_output_ports_store_lists_and_feed_many_inputs(store, tmp_path):
    wf = (
        Workflow("many").add_input("t", "text")
        .add_node("s", "t.split", inputs={"text": "t"})
        .add_node("j", "t.join", inputs={"texts": "s.words"})
        .add_output("words", "s.words").add_output("joined", "j.text")
    )
    compiled = wf.compile(registry=registry)
    result = compiled.run({"t": "one two three"}, store=store)
    assert result.load("words") == ["one", "two", "three"]
    assert result.load("joined") == "one + two + three"
    assert [p.name for p in result.save("words", tmp_path / "w")] == ["words-0.txt", "words-1.txt", "words-2.txt"]
    # tool-recorded provenance is merged into every output
    assert {store.stat(r).meta.provenance.model for r in result.outputs["words"]} == {"word-splitter-v1"}
    again = compiled.run({"t": "one two three"}, store=store)
    assert again.nodes["s"].status == "cached" and again.outputs["words"] == result.outputs["words"]
    # a single port cannot take a list
    bad = Workflow("bad").add_input("t", "text").add_node("s", "t.split", inputs={"text": "t"}).add_node("u", "t.upper", inputs={"text": "s.words"}).add_output("o", "u.text")
    with pytest.raises(Exception, match="takes one artifact but 's.words' is a list"):
        bad.compile(registry=registry)


def test_an_optional_output_port_left_empty_is_not_an_error(store):
    wf = Workflow("opt").add_input("t", "text").add_node("m", "t.maybe_many", inputs={"text": "t"})
    wf.add_output("text", "m.text").add_output("extras", "m.extras")
    compiled = wf.compile(registry=registry)
    one = compiled.run({"t": "single"}, store=store)
    assert one.status == "succeeded" and "extras" not in one.outputs and one.errors == {}
    two = compiled.run({"t": "two words"}, store=store)
    assert two.load("extras") == ["two", "words"]


def test_timed_out_blocking_tool_is_told_to_stop_and_leaves_no_pins(store):
    wf = Workflow("slow").add_input("t", "text").add_node("s", "t.slow_sync", {"seconds": 5}, inputs={"text": "t"},
                                                          timeout=0.2).add_output("o", "s.text")
    started = time.perf_counter()
    result = wf.compile(registry=registry).run({"t": "x"}, store=store, cache=False)
    assert result.status == "failed" and "timed out" in result.errors["s"]
    assert time.perf_counter() - started < 2  # ctx.cancelled stopped the loop well before 5 s
    time.sleep(0.2)  # the abandoned thread returns and stores its result
    if isinstance(store, RedisArtifactStore):
        assert not store.r.exists(f"{store.prefix}pin:{result.run_id}")
    else:
        assert result.run_id not in store._pins


def test_langgraph_config_can_be_made_outside_a_loop(store):
    compiled = branches(0.0).compile(registry=registry)
    config = compiled.langgraph_config(store=store)  # plain sync code
    out = asyncio.run(compiled.graph.ainvoke({"inputs": {"text": store.put("sync")}}, config))
    assert store.load(out["refs"]["both"]["text"]) == "SYNC< + SYNC>"


def test_an_input_given_by_id_is_pinned_while_the_run_lives(store):
    from orchestrator import LocalArtifactStore, ToolRegistry, tool

    store.default_ttl = 300
    given = store.put("kept by the run")
    ttl_during: list[float | None] = []

    def ttl() -> float | None:
        if isinstance(store, LocalArtifactStore):
            exp = store.expires_at(given)
            return None if exp is None else exp - time.time()
        return None if max(store.ttl(given).values()) < 0 else 1.0

    @tool("t.peek_ttl", task="probe", description="Note the input's TTL.", inputs={"text": "text"},
          outputs={"text": "text"}, register=False)
    def peek(text: str) -> str:
        ttl_during.append(ttl())
        return text

    reg = ToolRegistry()
    reg.register(peek)
    wf = Workflow("peek").add_input("t", "text").add_node("p", "t.peek_ttl", inputs={"text": "t"}).add_output("o", "p.text")
    assert ttl() is not None
    assert wf.compile(registry=reg).run({"t": given.id}, store=store, cache=False).ok
    assert ttl_during == [None]  # pinned: no TTL while the run lives
    assert ttl() is not None  # the run let go: the default TTL is back
    with pytest.raises(WorkflowInputError, match="no such artifact"):
        wf.compile(registry=reg).run({"t": "sha256:" + "0" * 64}, store=store)


def upper_chain(n: int) -> Workflow:
    wf = Workflow("chain").add_input("t", "text")
    prev = "t"
    for i in range(n):
        wf.add_node(f"u{i}", "t.upper", {"suffix": str(i)}, inputs={"text": prev})
        prev = f"u{i}.text"
    return wf.add_output("o", prev)


def test_a_fully_cached_rerun_reports_every_node_cached_in_order(store):
    compiled = upper_chain(4).compile(registry=registry)
    first = compiled.run({"t": "again"}, store=store)
    before = workflow_tools.calls.get("t.upper", 0)
    again = compiled.run({"t": "again"}, store=store)
    assert workflow_tools.calls.get("t.upper", 0) == before
    assert again.ok and again.outputs == first.outputs and again.load("o") == "AGAIN0123"
    assert [(e.type, e.node) for e in again.events] == [
        ("run_started", None), *[("node_cached", f"u{i}") for i in range(4)], ("run_finished", None)]
    assert [e.seq for e in again.events] == list(range(1, 7))
    assert [e.outputs for e in again.events[1:-1]] == [n.outputs for n in first.nodes.values()]


def test_a_cached_result_whose_artifact_is_gone_runs_again(store):
    compiled = upper_chain(3).compile(registry=registry)
    first = compiled.run({"t": "gone"}, store=store)
    assert store.delete(first.nodes["u1"].outputs["text"])
    again = compiled.run({"t": "gone"}, store=store)
    assert {k: n.status for k, n in again.nodes.items()} == {"u0": "cached", "u1": "succeeded", "u2": "cached"}
    assert again.load("o") == "GONE012" and again.outputs == first.outputs
    third = compiled.run({"t": "gone"}, store=store)
    assert {n.status for n in third.nodes.values()} == {"cached"}


def test_cached_outputs_are_pinned_while_the_run_lives(store):
    from orchestrator import LocalArtifactStore, ToolRegistry, tool

    store.default_ttl = 300
    seen: list[bool] = []

    @tool("t.peek_pin", task="probe", description="Note whether the input has a TTL.", inputs={"text": "text"},
          outputs={"text": "text"}, register=False, cacheable=False)
    def peek(text: str, *, ctx) -> str:
        ref = ctx.store.put(text)
        if isinstance(store, LocalArtifactStore):
            seen.append(store.expires_at(ref) is None)
        else:
            seen.append(max(store.ttl(ref).values()) < 0)
        return text + "."

    reg = ToolRegistry()
    for t in (peek, registry.get("t.upper")):
        reg.register(t)
    wf = (Workflow("pin").add_input("t", "text").add_node("u", "t.upper", inputs={"text": "t"})
          .add_node("p", "t.peek_pin", inputs={"text": "u.text"}).add_output("o", "p.text"))
    compiled = wf.compile(registry=reg)
    first = compiled.run({"t": "pinned"}, store=store)
    again = compiled.run({"t": "pinned"}, store=store)
    assert again.nodes["u"].status == "cached" and again.nodes["p"].status == "succeeded"
    assert seen == [True, True]  # the cached upstream output has no TTL while a run uses it
    assert again.load("o") == first.load("o") == "PINNED!."
    ref = first.nodes["u"].outputs["text"]
    if isinstance(store, LocalArtifactStore):
        assert store.expires_at(ref) is not None  # released when the run returned
    else:
        assert max(store.ttl(ref).values()) > 0


def test_a_cached_rerun_writes_no_file_in_the_directory_store(local_store):
    compiled = upper_chain(4).compile(registry=registry)
    compiled.run({"t": "no writes"}, store=local_store)

    def files() -> dict[str, tuple[int, int, int]]:
        return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
                for p in local_store.root.rglob("*") if p.is_file()}

    before = files()
    again = compiled.run({"t": "no writes"}, store=local_store)
    assert {n.status for n in again.nodes.values()} == {"cached"}
    assert files() == before


def _count_round_trips(store: RedisArtifactStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store's round trips to Redis: each command, and each pipeline sent."""
    count = [0]
    command, pipeline = store.r.execute_command, store.r.pipeline

    def counted_command(*args, **kwargs):
        count[0] += 1
        return command(*args, **kwargs)

    def counted_pipeline(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted_execute(*a, **k):
            count[0] += 1
            return execute(*a, **k)

        pipe.execute = counted_execute
        return pipe

    monkeypatch.setattr(store.r, "execute_command", counted_command)
    monkeypatch.setattr(store.r, "pipeline", counted_pipeline)
    return count


def test_redis_round_trips_per_node(redis_store, monkeypatch):
    count = _count_round_trips(redis_store, monkeypatch)
    short, long = upper_chain(3).compile(registry=registry), upper_chain(12).compile(registry=registry)
    trips = {}
    for name, compiled in (("short", short), ("long", long)):
        for run in ("first", "cached"):
            count[0] = 0
            result = compiled.run({"t": f"trips {name}"}, store=redis_store)
            assert result.ok and {n.status for n in result.nodes.values()} == {"succeeded" if run == "first" else "cached"}
            trips[name, run] = count[0]
    # a first run: a lookup, the outputs and the cache entry per node (three round trips at most)
    assert trips["long", "first"] - trips["short", "first"] <= 3 * 9, trips
    # a cached rerun checks every node's outputs at once: as many round trips for 12 nodes as for 3
    assert trips["long", "cached"] == trips["short", "cached"] <= 4, trips


def test_a_cached_fan_out_reads_its_branches_records_in_one_round_trip(redis_store, monkeypatch):
    from orchestrator.settings import Settings

    settings = Settings(node_cache_memo_entries=0)  # every record is read from Redis, as in a new process

    def fan_out(n: int) -> Workflow:
        wf = Workflow("fan").add_input("t", "text")
        for i in range(n):
            wf.add_node(f"b{i}", "t.upper", {"suffix": str(i)}, inputs={"text": "t"})
        wf.add_node("j", "t.join", inputs={"texts": [f"b{i}.text" for i in range(n)]})
        return wf.add_output("o", "j.text")

    count = _count_round_trips(redis_store, monkeypatch)
    trips = {}
    for n in (3, 12):
        compiled = fan_out(n).compile(registry=registry, settings=settings)
        assert compiled.run({"t": "fan"}, store=redis_store).ok
        count[0] = 0
        again = compiled.run({"t": "fan"}, store=redis_store)
        assert {r.status for r in again.nodes.values()} == {"cached"} and again.load("o").startswith("FAN0 + FAN1")
        trips[n] = count[0]
    assert trips[3] == trips[12] <= 5, trips  # the branches in one read, the join in another


# ------------------------------------------------------------------ write-behind of node outputs


def _twin(store):
    """Another store object on the same backend: what another process sees."""
    from orchestrator import LocalArtifactStore

    if isinstance(store, RedisArtifactStore):
        return RedisArtifactStore(store.url, prefix=store.prefix, chunk_bytes=store.chunk_bytes)
    return LocalArtifactStore(store.root)


def _records_point_at_stored_artifacts(store) -> int:
    from orchestrator.workflow._engine import CACHE_NAMESPACE

    keys = store.list_records(CACHE_NAMESPACE)
    for key in keys:
        record, refs = store.get_record_refs(CACHE_NAMESPACE, key)
        assert record and all(ref is not None for ref in refs.values()), (key, record)
    return len(keys)


@pytest.mark.parametrize("cache", [True, False])
def test_outputs_are_stored_when_the_run_returns(store, cache):
    result = upper_chain(5).compile(registry=registry).run({"t": f"kept {cache}"}, store=store, cache=cache)
    other = _twin(store)
    assert result.ok and store.pending_writes == 0
    assert other.load(result.outputs["o"]) == f"KEPT {cache}".upper() + "01234"
    assert all(other.exists(n.outputs["text"]) for n in result.nodes.values())
    assert _records_point_at_stored_artifacts(other) == (5 if cache else 0)


def test_listeners_only_see_refs_that_are_stored(store):
    other = _twin(store)
    unstored: list[str] = []

    def check(event) -> None:
        for ref in getattr(event, "outputs", None) and event.outputs.values() or []:
            if not other.exists(ref):
                unstored.append(f"{event.type} {event.node}")

    compiled = upper_chain(4).compile(registry=registry)
    assert compiled.run({"t": "heard"}, store=store, cache=False, on_event=check).ok

    async def follow() -> None:
        async for event in compiled.astream({"t": "followed"}, store=store, cache=False):
            check(event)

    asyncio.run(follow())
    assert unstored == []


def test_a_chain_with_the_cache_off_costs_the_same_round_trips_at_any_length(redis_store, monkeypatch):
    redis_store.put("load the scripts")
    count = _count_round_trips(redis_store, monkeypatch)
    trips = {}
    for n in (2, 12):
        compiled = upper_chain(n).compile(registry=registry)
        count[0] = 0
        assert compiled.run({"t": f"batched {n}"}, store=redis_store, cache=False).ok
        trips[n] = count[0]
    assert trips[2] == trips[12] <= 2, trips  # the outputs, with the release of the run's pins, in one


@pytest.mark.parametrize("cache", [True, False])
def test_a_store_failing_under_a_run_fails_it_and_no_cache_record_points_at_nothing(store, cache, monkeypatch):
    import redis

    compiled = upper_chain(4).compile(registry=registry)
    assert compiled.run({"t": "before"}, store=store).ok  # stored, with its cache records

    if isinstance(store, RedisArtifactStore):  # every pipeline refused, as Redis refuses writes out of memory
        pipeline = store.r.pipeline

        def refusing_pipeline(*args, **kwargs):
            pipe = pipeline(*args, **kwargs)
            pipe.execute = lambda *a, **k: (_ for _ in ()).throw(redis.ResponseError("OOM command not allowed"))
            return pipe

        monkeypatch.setattr(store.r, "pipeline", refusing_pipeline)
    else:  # every file the directory store writes refused, as on a full disk
        monkeypatch.setattr(store, "_tmpfile", lambda data: (_ for _ in ()).throw(OSError(28, "No space left")))
    result = compiled.run({"t": "during"}, store=store, cache=cache)
    monkeypatch.undo()
    assert result.status == "failed" and any(why in " ".join(result.errors.values()) for why in ("OOM", "No space"))
    other = _twin(store)
    assert not any(other.exists(n.outputs["text"]) for n in result.nodes.values() if n.outputs)
    assert _records_point_at_stored_artifacts(other) == 4  # the first run's, still whole
    assert compiled.run({"t": "before"}, store=store).load("o") == "BEFORE0123"  # nothing stored was lost


def test_an_output_whose_provenance_is_not_json_fails_its_node_before_anything_is_stored(store):
    from orchestrator import ToolRegistry, tool

    @tool("t.odd_provenance", task="tag", description="Tags the text; records a note the store cannot write.",
          inputs={"text": "text"}, outputs={"text": "text"}, register=False)
    def odd_provenance(text: str, *, ctx) -> str:
        ctx.provenance["note"] = object()  # no JSON for it
        return text + " (tagged)"

    local = ToolRegistry()
    local.register(odd_provenance)
    wf = (Workflow("odd").add_input("t", "text")
          .add_node("tag", "t.odd_provenance", inputs={"text": "t"})
          .add_output("o", "tag.text"))
    for cache in (False, True):
        result = wf.compile(registry=local).run({"t": f"a memo {cache}"}, store=store, cache=cache)
        assert result.status == "failed"
        assert result.nodes["tag"].status == "failed"
        assert "could not be stored: invalid artifact metadata" in result.nodes["tag"].error
        assert not store.exists(ArtifactRef.for_bytes(f"a memo {cache} (tagged)".encode(), "text"))


def test_a_ref_a_tool_returns_as_it_was_is_pinned_to_the_run(store, monkeypatch):
    from orchestrator import ToolRegistry, tool

    @tool("t.keep_ref", task="tag", description="Stores a tagged copy itself and returns its ref.",
          inputs={"text": "text"}, outputs={"text": "text"}, register=False)
    def keep_ref(text: str, *, ctx) -> ArtifactRef:
        return ctx.store.put(text + " (kept)", modality="text")

    local = ToolRegistry()
    local.register(keep_ref)
    wf = (Workflow("keep").add_input("t", "text")
          .add_node("k", "t.keep_ref", inputs={"text": "t"})
          .add_output("o", "k.text"))
    pinned: list[tuple[str, list[str]]] = []
    real_pin = store.pin

    def spy(run_id, refs):
        refs = list(refs)
        pinned.append((run_id, [getattr(r, "id", r) for r in refs]))
        return real_pin(run_id, refs)

    monkeypatch.setattr(store, "pin", spy)
    result = wf.compile(registry=local).run({"t": "a label"}, store=store, cache=False)
    assert result.ok and result.load("o") == "a label (kept)"
    assert (result.run_id, [result.outputs["o"].id]) in pinned
