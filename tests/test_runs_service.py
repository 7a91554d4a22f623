"""The one run service: the CLI and the server make the same record for the same run; the run
manager's event streams end cleanly when the store fails mid-follow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_proc import ServerProcess
from typer.testing import CliRunner
from workflow_tools import hold_interpreter

from orchestrator.artifacts import LocalArtifactStore
from orchestrator.cli import app
from orchestrator.errors import StoreUnavailable
from orchestrator.runs import Outcome, RunRecord
from orchestrator.server._runs import RunManager, event_stream
from orchestrator.server.settings import ServerSettings

WORKFLOW = {
    "name": "same-record",
    "inputs": [{"name": "text", "modality": "text"}],
    "nodes": [
        {"id": "wrap", "tool": "text.template", "params": {"template": "<{text}>"}, "inputs": {"texts": "text"}},
        {"id": "broken", "tool": "text.template", "params": {"template": "stray {"}, "inputs": {"texts": "text"}},
        {"id": "again", "tool": "text.template", "params": {"template": "[{text}]"}, "inputs": {"texts": "wrap.text"}},
    ],
    "outputs": [{"name": "good", "source": "again.text"}, {"name": "bad", "source": "broken.text"}],
}
PROMPT = "Summarize this text: 'One service runs every run. The CLI and the server share it. Records match.'"


def _run_steps(wait: asyncio.Event | None = None, *, finished: bool = False,
               start_after: asyncio.Event | None = None) -> Callable[[Any], AsyncIterator[Any]]:
    """A run's steps: silent until ``start_after`` is set (if given), node ``a`` starts, waits for ``wait``
    (if given), finishes (with ``finished``), and the run succeeds."""
    async def steps(job: Any) -> AsyncIterator[Any]:
        if start_after is not None:
            await start_after.wait()
        yield {"type": "node_started", "node": "a", "tool": "x.tool"}
        if wait is not None:
            await wait.wait()
        if finished:
            yield {"type": "node_finished", "node": "a", "tool": "x.tool", "seconds": 0.0}
        yield Outcome("succeeded")

    return steps


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    with ServerProcess(redis_url=redis_url) as srv:
        yield srv


def _server_record(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    with server.client() as http:
        run = http.post("/v1/runs", json=body).json()
        for _ in range(400):
            doc = http.get(f"/v1/runs/{run['id']}").json()
            if doc["status"] not in ("queued", "running"):
                return dict(doc)
            asyncio.run(asyncio.sleep(0.05))
    raise AssertionError(f"run {run['id']} did not finish")


def _cli_record(tmp_path: Path, args: list[str]) -> dict[str, Any]:
    env = {"ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"), "ORCHESTRATOR_REDIS_URL": "", "TQDM_DISABLE": "1"}
    out = tmp_path / "out"
    CliRunner().invoke(app, ["run", *args, "--no-cache", "--quiet", "--out", str(out)], env=env,
                       catch_exceptions=False)
    return dict(json.loads((out / "run.json").read_text()))


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """What must agree: status, errors, each node's status/tool/error/output ids, each output's id."""
    def ids(value: Any) -> Any:
        return [r["id"] for r in value] if isinstance(value, list) else value["id"]

    return {
        "status": record["status"],
        "errors": record["errors"],
        "refusals": record["refusals"],
        "nodes": {n: {"status": s["status"], "tool": s.get("tool"), "error": s.get("error"),
                      "outputs": {p: ids(v) for p, v in (s.get("outputs") or {}).items()}}
                  for n, s in record["nodes"].items()},
        "outputs": {k: v["id"] for k, v in record["outputs"].items()},
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["workflow", "prompt"])
def test_the_cli_and_the_server_make_the_same_record(server: ServerProcess, tmp_path: Path, case: str) -> None:
    if case == "workflow":
        (tmp_path / "wf.json").write_text(json.dumps(WORKFLOW))
        cli = _cli_record(tmp_path, ["--graph", str(tmp_path / "wf.json"), "-i", "text=same"])
        srv = _server_record(server, {"workflow": WORKFLOW, "inputs": {"text": "same"},
                                      "options": {"cache": False}})
        assert cli["kind"] == srv["kind"] == "workflow" and cli["status"] == "partial"
        assert {n: s["status"] for n, s in cli["nodes"].items()} == {
            "wrap": "succeeded", "broken": "failed", "again": "succeeded"}
    else:
        cli = _cli_record(tmp_path, [PROMPT])
        srv = _server_record(server, {"prompt": PROMPT, "options": {"cache": False}})
        assert cli["kind"] == srv["kind"] == "prompt" and cli["status"] == "succeeded"
        assert cli["plan"] == srv["plan"] and cli["answer"] == srv["answer"]
    assert _comparable(cli) == _comparable(srv)
    assert cli["executor"] == srv["executor"] == "local"
    assert all(info["file"] for info in cli["outputs"].values())
    with server.client() as http:  # the server's output is downloadable and is the file the CLI wrote
        for name, view in srv["outputs"].items():
            assert httpx.get(view["url"]).content == Path(cli["outputs"][name]["file"]).read_bytes()


class _FailingStore(LocalArtifactStore):
    """The embedded store, whose event reads fail once ``broken`` is set (a disk or Redis going away)."""

    broken = False

    def read_events(self, stream: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        if self.broken:
            raise StoreUnavailable("the event log cannot be read", backend="test")
        return super().read_events(stream, after)


async def test_follow_ends_with_an_error_event_when_the_store_fails(tmp_path: Path) -> None:
    """A follower of a run another process executes reads the store: when it fails, the stream ends
    with an error item saying where to resume. Followers in the run's own process read its events
    from memory, so the same failure does not stop them."""
    store = _FailingStore(tmp_path)
    owner = RunManager(store, ServerSettings(max_concurrent_runs=1))
    other = RunManager(store, ServerSettings(max_concurrent_runs=1))  # another server process on the same store
    gate = asyncio.Event()

    steps = _run_steps(gate, finished=True)

    await owner.start()
    await other.start()
    try:
        job = await owner.submit("graph", steps)
        local = asyncio.create_task(_collect(owner.follow(job.id, idle=0.2)))
        seen: list[Any] = []
        async for item in other.follow(job.id, idle=0.2):
            seen.append(item)
            if item is not None and item[1].get("type") == "node_started":
                store.broken = True
        assert seen[0] is not None and seen[0][0] == 1
        seq, doc = seen[-1]
        assert seq is None and doc["type"] == "error" and doc["last_event_id"] == 1
        assert doc["error"]["type"] == "StoreUnavailable" and "reconnect" in doc["error"]["message"]
        gate.set()  # the store is still unreadable: the owner's own follower goes on from memory
        events = await asyncio.wait_for(local, timeout=5)
        assert [d["type"] for _, d in events] == ["node_started", "node_finished", "run_finished"]
        assert [seq for seq, _ in events] == [1, 2, 3]
    finally:
        store.broken = False
        gate.set()
        await owner.wait(job.id, timeout=5)
        await other.stop()
        await owner.stop()
    record = RunRecord.model_validate(await owner.get(job.id))
    assert record.status == "succeeded" and record.nodes["a"]["status"] == "succeeded"


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items if item is not None]


async def test_a_list_output_is_numbered_in_the_record(tmp_path: Path) -> None:
    """The service's record of a workflow whose output is a ``many`` port: one named ref per artifact."""
    from workflow_tools import registry

    from orchestrator.runs import AgentBackend, RunService, execute
    from orchestrator.settings import Settings
    from orchestrator.workflow import Workflow

    store = LocalArtifactStore(tmp_path / "store")
    wf = (Workflow("words").add_input("text", "text").add_node("cut", "t.split", inputs={"text": "text"})
          .add_output("words", "cut.words"))
    compiled = wf.compile(registry=registry)
    service = RunService(store, agent=AgentBackend(store=store, core_settings=Settings(data_dir=tmp_path)))
    record = RunRecord(id="r1", kind="workflow")
    record.start()
    outcome = await execute(record, service.workflow(compiled, {"text": store.put("one two three", modality="text")},
                                                     run_id=record.id))
    record.finish(outcome)
    assert record.status == "succeeded" and list(record.outputs) == ["words", "words_2", "words_3"]
    assert [store.load(ref) for ref in outcome.outputs.values()] == ["one", "two", "three"]
    assert [r["id"] for r in record.nodes["cut"]["outputs"]["words"]] == [v["id"] for v in record.outputs.values()]


def test_the_run_service_is_web_free_and_below_the_server() -> None:
    """``orchestrator.runs`` (and the CLI's ``run`` path) load no web stack; the agent imports neither
    the run service nor the server (the layers point one way)."""
    import ast
    import subprocess
    import sys

    import orchestrator.agent as agent_pkg

    code = ("import sys, orchestrator.runs, orchestrator.cli; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    for path in Path(agent_pkg.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("orchestrator.runs", "orchestrator.server")), (path, node.module)


async def test_the_record_says_where_its_nodes_ran(tmp_path: Path) -> None:
    """``executor`` is ``local`` by default and follows the executor the request names."""
    manager = RunManager(LocalArtifactStore(tmp_path), ServerSettings(max_concurrent_runs=1))

    async def steps(job: Any) -> Any:
        yield Outcome("succeeded")

    await manager.start()
    try:
        plain = await manager.submit("graph", steps, request={"graph": "g"})
        scaled = await manager.submit("graph", steps, request={"graph": "g", "executor": "ray"})
        assert plain.record.executor == "local" and scaled.record.executor == "ray"
        done = await manager.wait(scaled.id, timeout=5)
        assert done is not None and done["executor"] == "ray" and done["status"] == "succeeded"
    finally:
        await manager.stop()


async def test_a_run_of_another_process_is_followed_live_without_polling(redis_url: str, redis_prefix: str) -> None:
    """A follower in another run manager gets each event as it is appended (a blocking read on its own
    bounded pool), not at the next poll, and the default thread pool stays free meanwhile."""
    import threading
    import time

    from orchestrator.artifacts import RedisArtifactStore
    from orchestrator.workflow import CancelFlag

    owner_store = RedisArtifactStore(redis_url, prefix=redis_prefix)
    other_store = RedisArtifactStore(redis_url, prefix=redis_prefix)
    slow_poll = ServerSettings(max_concurrent_runs=1, event_poll_seconds=5.0, event_wait_seconds=10.0,
                               event_follow_threads=1)
    owner, other = RunManager(owner_store, slow_poll), RunManager(other_store, slow_poll)
    step = asyncio.Event()
    done = asyncio.Event()

    async def steps(job: Any) -> Any:
        await step.wait()
        step.clear()
        yield {"type": "node_started", "node": "a", "tool": "x.tool"}
        await done.wait()
        yield Outcome("succeeded")

    await owner.start()
    try:
        job = await owner.submit("graph", steps)
        assert isinstance(job.cancel, CancelFlag)
        arrivals: list[tuple[str, float]] = []

        async def follow() -> None:
            async for item in other.follow(job.id, idle=30):
                if item is not None:
                    arrivals.append((str(item[1].get("type")), time.monotonic()))

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.3)  # the follower is blocked on the log now
        assert any(t.name.startswith("orch-follow") for t in threading.enumerate())
        started = time.monotonic()
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 1), 1.0) == 1  # default pool not taken
        step.set()
        for _ in range(100):
            if any(kind == "node_started" for kind, _ in arrivals):
                break
            await asyncio.sleep(0.02)
        got = dict(arrivals)
        assert "node_started" in got and got["node_started"] - started < 1.5  # not at the 5 s poll
        done.set()
        await asyncio.wait_for(follower, 10)
        assert arrivals[-1][0] == "run_finished"
    finally:
        step.set()
        done.set()
        await owner.stop()
        await other.stop()
        owner_store.close()
        other_store.close()


async def test_a_cancel_from_another_process_reaches_the_owner_at_once(redis_url: str, redis_prefix: str) -> None:
    """The owner blocks on its control log, so a cancel sent through another run manager stops the run
    well before the owner's heartbeat (every lease_seconds / 3) would have seen it."""
    import time

    from orchestrator.artifacts import RedisArtifactStore

    owner_store = RedisArtifactStore(redis_url, prefix=redis_prefix)
    other_store = RedisArtifactStore(redis_url, prefix=redis_prefix)
    slow_heartbeat = ServerSettings(max_concurrent_runs=1, lease_seconds=60.0, cancel_grace_seconds=0.0)
    owner, other = RunManager(owner_store, slow_heartbeat), RunManager(other_store, slow_heartbeat)
    started = asyncio.Event()

    async def forever(job: Any) -> Any:
        yield {"type": "node_started", "node": "a", "tool": "x.tool"}
        started.set()
        await asyncio.sleep(3600)
        yield Outcome("succeeded")

    await owner.start()
    await other.start()
    try:
        job = await owner.submit("graph", forever)
        await asyncio.wait_for(started.wait(), 5)
        t0 = time.monotonic()
        seen = await other.cancel(job.id)
        assert seen is not None and seen["cancel_requested"] and seen["status"] == "running"
        await asyncio.wait_for(job.done.wait(), 5)
        assert time.monotonic() - t0 < 2.0  # not the 20 s heartbeat
        record = await other.get(job.id)
        assert record is not None and record["status"] == "cancelled" and record["cancel_requested"]
        events = [doc for _, doc in owner_store.read_events(f"run:{job.id}")]
        assert events[-1]["type"] == "run_failed" and events[-1]["status"] == "cancelled"
    finally:
        await owner.stop()
        await other.stop()
        owner_store.close()
        other_store.close()


class _SlowLog(LocalArtifactStore):
    """A store whose event appends take ``delay`` seconds each."""

    delay = 0.05

    def append_event(self, stream: str, event: dict[str, Any]) -> int:
        import time

        time.sleep(self.delay)
        return super().append_event(stream, event)

    def append_events(self, stream: str, events: list[dict[str, Any]]) -> list[int]:
        import time

        time.sleep(self.delay * len(events))
        return super().append_events(stream, events)


async def test_a_run_goes_on_while_its_events_are_stored_and_followers_see_only_stored_events(tmp_path: Path) -> None:
    """Events are stored in batches by the log writer: a run emitting faster than the store appends
    is not held up by each append, every event is stored in order before the run ends, and a
    follower is given an event only once the store has it."""
    import time

    store = _SlowLog(tmp_path)
    manager = RunManager(store, ServerSettings(max_concurrent_runs=1))
    emitted_all = asyncio.Event()
    count = 12

    async def chatty(job: Any) -> Any:
        for i in range(count):
            yield {"type": "node_progress", "node": "a", "tool": "x.tool", "done": i + 1, "total": count}
        emitted_all.set()
        yield Outcome("succeeded")

    await manager.start()
    try:
        t0 = time.monotonic()
        job = await manager.submit("graph", chatty)
        seen: list[tuple[int, bool]] = []

        async def follow() -> None:
            async for item in manager.follow(job.id, idle=5):
                if item is not None:
                    stored = [seq for seq, _ in store.read_events(f"run:{job.id}")]
                    seen.append((item[0], item[0] in stored))

        follower = asyncio.create_task(follow())
        await asyncio.wait_for(emitted_all.wait(), 5)
        emitted_after = time.monotonic() - t0
        await asyncio.wait_for(job.done.wait(), 10)
        stored_after = time.monotonic() - t0
        await asyncio.wait_for(follower, 5)
    finally:
        await manager.stop()
    # one append is 50 ms: the run emitted all its events long before they were all stored
    assert emitted_after < 0.5 * stored_after and stored_after >= (count + 1) * _SlowLog.delay
    events = store.read_events(f"run:{job.id}")
    assert [seq for seq, _ in events] == list(range(1, count + 2))
    assert [d.get("done") for _, d in events[:count]] == list(range(1, count + 1))
    assert events[-1][1]["type"] == "run_finished"
    assert [seq for seq, _ in seen] == list(range(1, count + 2)) and all(stored for _, stored in seen)
    record = await manager.get(job.id)
    assert record is not None and record["status"] == "succeeded" and record["last_event_id"] == count + 1


async def test_another_process_sees_a_silent_run_running(tmp_path: Path) -> None:
    """The running record normally goes with a run's first events; a run that emits nothing for a
    while is still shown running to other processes after ``running_record_delay_seconds``."""
    store = LocalArtifactStore(tmp_path)
    settings = ServerSettings(max_concurrent_runs=1, running_record_delay_seconds=0.05)
    owner, other = RunManager(store, settings), RunManager(store, settings)
    release = asyncio.Event()
    silent = _run_steps(start_after=release)

    await owner.start()
    await other.start()
    try:
        job = await owner.submit("graph", silent)
        seen = None
        for _ in range(50):
            seen = await other.get(job.id)
            if seen is not None and seen["status"] == "running":
                break
            await asyncio.sleep(0.02)
        assert seen is not None and seen["status"] == "running" and seen["last_event_id"] == 0
        release.set()
        await asyncio.wait_for(job.done.wait(), 5)
        final = await other.get(job.id)
        assert final is not None and final["status"] == "succeeded" and final["last_event_id"] == 2
        assert [d["type"] for _, d in store.read_events(f"run:{job.id}")] == ["node_started", "run_finished"]
    finally:
        release.set()
        await owner.stop()
        await other.stop()


class _CountingStore(LocalArtifactStore):
    """The directory store, noting every record write and delete as ``(op, namespace, key)``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[tuple[str, str, str]] = []
        self.lives: list[tuple[str, str, float | None]] = []  # (namespace or "events", key, ttl) as written

    def put_record(self, namespace: str, key: str, value: dict[str, Any], *, ttl: float | None = None) -> None:
        self.writes.append(("put", namespace, key))
        self.lives.append((namespace, key, ttl))
        super().put_record(namespace, key, value, ttl=ttl)

    def expire_events(self, stream: str, ttl: float | None) -> None:
        self.lives.append(("events", stream, ttl))
        super().expire_events(stream, ttl)

    def delete_record(self, namespace: str, key: str) -> bool:
        self.writes.append(("delete", namespace, key))
        return super().delete_record(namespace, key)


async def test_only_a_run_older_than_the_delay_is_marked_active_and_a_dead_owners_run_is_swept(
        tmp_path: Path) -> None:
    """A light run writes its record (queued, running, final) and no active mark (nor its delete); a run
    still going after ``running_record_delay_seconds`` is marked, its mark dropped when it ends; a marked
    run whose server died is found by another server's sweep and recorded interrupted."""
    store = _CountingStore(tmp_path)
    settings = ServerSettings(max_concurrent_runs=2, running_record_delay_seconds=0.2)
    manager = RunManager(store, settings)
    release = asyncio.Event()

    quick, slow = _run_steps(), _run_steps(release)

    await manager.start()
    try:
        light = await manager.submit("graph", quick)
        await asyncio.wait_for(light.done.wait(), 5)
        long = await manager.submit("graph", slow)
        await asyncio.sleep(0.4)
        assert store.get_record("runs_active", long.id) is not None
        release.set()
        await asyncio.wait_for(long.done.wait(), 5)
        await asyncio.sleep(0.3)  # past the light run's delay too
    finally:
        release.set()
        await manager.stop()
    mine = [(op, ns) for op, ns, key in store.writes if key == light.id]
    assert mine and set(mine) == {("put", "runs")}  # queued, (running,) final: nothing in runs_active
    theirs = [(op, ns) for op, ns, key in store.writes if key == long.id]
    assert ("put", "runs_active") in theirs and theirs[-1] == ("delete", "runs_active")
    assert store.list_records("runs_active") == []
    assert store.get_record("runs", light.id)["status"] == store.get_record("runs", long.id)["status"] == "succeeded"

    # a server that dies with a marked run: another one's sweep records it interrupted
    dead = RunManager(store, settings)
    await dead.start()
    stuck = await dead.submit("graph", slow)
    release.clear()
    await asyncio.sleep(0.4)
    assert store.get_record("runs_active", stuck.id) is not None
    for task in (dead._background, dead._control):  # it stops renewing its lease, as after a crash
        if task is not None:
            task.cancel()
    store.delete_record("servers", dead.instance_id)  # and the lease expires
    survivor = RunManager(store, settings)
    try:
        assert await survivor.sweep() == 1
        record = store.get_record("runs", stuck.id)
        assert record is not None and record["status"] == "interrupted"
        assert store.list_records("runs_active") == []
    finally:
        release.set()
        await dead.stop()


async def test_the_first_keep_alive_comes_after_first_idle_then_every_idle(tmp_path: Path) -> None:
    """A follower of a silent run yields its first ``None`` after ``first_idle`` (an event stream's head
    waits for it), the next ones after ``idle``; events still come as they are stored."""
    import time

    manager = RunManager(LocalArtifactStore(tmp_path), ServerSettings(max_concurrent_runs=1))
    release = asyncio.Event()
    silent = _run_steps(start_after=release)

    await manager.start()
    try:
        job = await manager.submit("graph", silent)
        t0 = time.monotonic()
        seen: list[tuple[float, Any]] = []
        async for batch in manager.follow_batches(job.id, first_idle=0.05, idle=0.6):
            seen.append((time.monotonic() - t0, batch))
            if len([b for _, b in seen if b is None]) == 2:
                release.set()
    finally:
        release.set()
        await manager.stop()
    quiet = [t for t, b in seen if b is None]
    assert len(quiet) == 2 and quiet[0] < 0.4 and quiet[1] - quiet[0] >= 0.55
    assert [d["type"] for b in (b for _, b in seen if b is not None) for _, d in b] == ["node_started", "run_finished"]


class _ThreadNoting(LocalArtifactStore):
    """The directory store, noting which thread appends each batch of events (after ``delay`` seconds)."""

    delay = 0.0

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.threads: list[int] = []

    def append_events(self, stream: str, events: list[dict[str, Any]]) -> list[int]:
        import threading
        import time

        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        return super().append_events(stream, events)


async def test_store_writes_go_on_the_loop_while_quick_and_back_to_threads_when_slow(tmp_path: Path) -> None:
    """A run's store writes start in threads; timed now and then on the loop (every STORE_PROBE_EVERY-th), a
    quick store gets them on the loop (no thread hand-off); a store turned slow sends them back to threads."""
    import threading

    store = _ThreadNoting(tmp_path)
    manager = RunManager(store, ServerSettings(max_concurrent_runs=1), inline_seconds=0.05)
    loop_thread = threading.get_ident()

    quick = _run_steps()

    async def runs(n: int) -> None:
        for _ in range(n):
            job = await manager.submit("graph", quick)
            await asyncio.wait_for(job.done.wait(), 5)

    await manager.start()
    try:
        await runs(10)
        assert loop_thread not in store.threads  # at first, in threads
        await runs(4 * RunManager.STORE_PROBE_EVERY)
        assert store.threads[-10:] == [loop_thread] * 10  # quick: on the loop
        store.delay = 0.2  # slow: one write on the loop is enough to send them back
        await runs(3)
        store.delay = 0.0
        mark = len(store.threads)
        await runs(5)
        assert loop_thread not in store.threads[mark:]
    finally:
        await manager.stop()


async def test_store_calls_slow_from_their_own_work_stay_on_the_loop_and_waiting_ones_go_to_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the time a store call waits sends it to a thread: its own CPU work would hold the interpreter
    there too, and the hand-offs would cost more on top."""
    import threading
    import time

    monkeypatch.setattr(RunManager, "STORE_PROBE_EVERY", 2)  # while in threads, every other call timed on the loop
    loop_thread = threading.get_ident()
    where: list[int] = []

    def work() -> None:  # three times the limit below of work, nothing to wait for
        where.append(threading.get_ident())
        hold_interpreter(0.1)

    def wait() -> None:  # as long, all of it waiting
        where.append(threading.get_ident())
        time.sleep(0.1)

    for fn, on_loop in ((work, True), (wait, False)):
        manager = RunManager(LocalArtifactStore(tmp_path), ServerSettings(), inline_seconds=0.03)
        where.clear()
        for _ in range(10):
            await manager._store_call(fn)
        assert loop_thread not in where[:1], "calls start in threads"
        assert (where[-3:] == [loop_thread] * 3) is on_loop, where


async def test_runs_at_once_on_a_slow_store_each_store_every_event_in_order(tmp_path: Path) -> None:
    """One log writer serves every run of a process: runs emitting at once on a slow store each get all
    their events stored, in order, with their own final record."""
    store = _SlowLog(tmp_path)
    manager = RunManager(store, ServerSettings(max_concurrent_runs=4))
    count = 5

    async def chatty(job: Any) -> Any:
        for i in range(count):
            yield {"type": "node_progress", "node": "a", "tool": "x.tool", "done": i + 1, "total": count}
            await asyncio.sleep(0.01)
        yield Outcome("succeeded")

    await manager.start()
    try:
        jobs = [await manager.submit("graph", chatty) for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*(job.done.wait() for job in jobs)), 20)
    finally:
        await manager.stop()
    for job in jobs:
        events = store.read_events(f"run:{job.id}")
        assert [seq for seq, _ in events] == list(range(1, count + 2))
        assert [d.get("done") for _, d in events[:count]] == list(range(1, count + 1))
        assert all(d["run_id"] == job.id for _, d in events) and events[-1][1]["type"] == "run_finished"
        record = store.get_record("runs", job.id)
        assert record is not None and record["status"] == "succeeded" and record["last_event_id"] == count + 1


async def test_a_runs_end_cuts_the_log_writers_linger_short(tmp_path: Path) -> None:
    """Events wait up to ``event_linger_seconds`` for company; a run that ends stores what waits at
    once, with its final record (a linger of an hour does not hold the run's end)."""
    store = LocalArtifactStore(tmp_path)
    manager = RunManager(store, ServerSettings(event_linger_seconds=3600.0))
    first_stored = asyncio.Event()

    two_steps = _run_steps(first_stored, finished=True)

    await manager.start()
    try:
        job = await manager.submit("graph", two_steps)
        for _ in range(250):  # the first batch (with the running record) is stored at once
            if store.read_events(f"run:{job.id}"):
                break
            await asyncio.sleep(0.02)
        first_stored.set()
        await asyncio.wait_for(job.done.wait(), 5)
    finally:
        await manager.stop()
    kinds = [d["type"] for _, d in store.read_events(f"run:{job.id}")]
    assert kinds == ["node_started", "node_finished", "run_finished"]
    record = store.get_record("runs", job.id)
    assert record is not None and record["status"] == "succeeded" and record["last_event_id"] == 3


async def test_a_run_not_yet_marked_active_keeps_nothing_for_ever(tmp_path: Path) -> None:
    """Until a run is marked active (the crash sweep sees only marked runs), every record of it and its
    log are written with ``run_ttl_seconds`` of life: a server that dies then leaves nothing for ever."""
    store = _CountingStore(tmp_path)
    settings = ServerSettings(max_concurrent_runs=1, running_record_delay_seconds=5.0, run_ttl_seconds=600)
    manager = RunManager(store, settings)
    release = asyncio.Event()

    slow = _run_steps(release)

    await manager.start()
    try:
        job = await manager.submit("graph", slow)
        for _ in range(100):  # its first batch: the running record and the first event
            if store.read_events(event_stream(job.id)):
                break
            await asyncio.sleep(0.02)
        lives = [(ns, ttl) for ns, key, ttl in store.lives if job.id in key]
        assert lives and all(ttl == 600 for _, ttl in lives)
        assert ("events", 600) in lives and [ns for ns, _ in lives].count("runs") >= 2  # queued, running
    finally:
        release.set()
        await manager.stop()
