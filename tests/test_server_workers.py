"""Several server processes sharing one Redis: ``serve --workers N``, and two servers side by side.

Worker processes share nothing but the store, so what one process does for a run
another one executes (its record, its live events, cancelling it) is tested with two
servers on two ports, where the test chooses which process answers; ``--workers 2``
is then tested as a whole (both processes take runs, every stream ends, a clean stop
stops them all, a dead worker stops the server).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from server_proc import ServerProcess
from test_server_api import STEPS_WF, read_sse, sleep_wf, submit, wait_run, wait_running

from orchestrator.artifacts import Limits, RedisArtifactStore

FAST_LEASE = {"ORCHESTRATOR_LEASE_SECONDS": "1.5"}  # the heartbeat (which sees remote cancels) every 0.5 s


@pytest.fixture(scope="module")
def pair(redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one Redis key prefix, as two worker processes would be."""
    with ServerProcess(redis_url=redis_url, env=FAST_LEASE) as a, \
            ServerProcess(redis_url=redis_url, prefix=a.prefix, env=FAST_LEASE, keep_keys=True) as b:
        yield a, b


def test_events_of_a_run_another_process_executes(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    body = {"workflow": {**STEPS_WF, "nodes": [{**STEPS_WF["nodes"][0], "params": {"steps": 4, "delay": 0.1}},
                                               STEPS_WF["nodes"][1]]}, "inputs": {"text": "abc"}}
    with a.client() as http_a, b.client() as http_b:
        run = submit(http_a, body)
        remote = read_sse(http_b, f"/v1/runs/{run['id']}/events")  # follows it live, on the other process
        local = read_sse(http_a, f"/v1/runs/{run['id']}/events")
        record_b = http_b.get(f"/v1/runs/{run['id']}").json()
    assert [m["event"] for m in remote] == [m["event"] for m in local]
    assert [m["data"] for m in remote] == [m["data"] for m in local]
    ids = [int(m["id"]) for m in remote if "id" in m]
    assert ids == list(range(1, len(ids) + 1))
    assert sum(m["event"] == "node_progress" for m in remote) >= 4
    assert remote[-1]["event"] == "end" and remote[-1]["data"]["status"] == "succeeded"
    assert remote[-1]["data"]["last_event_id"] == ids[-1] == record_b["last_event_id"]
    assert record_b["status"] == "succeeded" and record_b["outputs"]["result"]["id"].startswith("sha256:")


def test_cancel_through_another_process(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    with a.client() as http_a, b.client() as http_b:
        run = submit(http_a, {"workflow": sleep_wf(30), "inputs": {"text": "zz"}})
        wait_running(http_b, run["id"])
        started = time.monotonic()
        r = http_b.delete(f"/v1/runs/{run['id']}")
        assert r.status_code == 202 and r.json()["cancel_requested"]
        done = wait_run(http_b, run["id"], timeout=10)
        assert time.monotonic() - started < 8  # a heartbeat (0.5 s) plus the cancel grace, not the 30 s nap
        events = read_sse(http_b, f"/v1/runs/{run['id']}/events")
        assert http_a.delete(f"/v1/runs/{run['id']}").status_code == 409
    assert done["status"] == "cancelled" and done["cancel_requested"]
    assert events[-2]["event"] == "run_failed" and events[-1]["data"]["status"] == "cancelled"


def test_two_worker_processes_share_the_port_and_the_runs(redis_url: str) -> None:
    with ServerProcess(redis_url=redis_url, args=["--workers", "2"]) as srv:
        parent = psutil.Process(srv.proc.pid)  # type: ignore[union-attr]
        workers = parent.children()
        assert len(workers) == 2
        store = RedisArtifactStore(redis_url, prefix=srv.prefix, limits=Limits())

        def one(i: int) -> tuple[str, str]:
            with srv.client() as http:  # a connection of its own: either process may take it
                run = submit(http, {"workflow": STEPS_WF, "inputs": {"text": f"run {i}"}})
            with srv.client() as http:  # and the events on another connection
                events = read_sse(http, f"/v1/runs/{run['id']}/events")
            assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded", events
            assert events[-2]["event"] == "run_finished"
            return run["id"], str(store.get_record("runs", run["id"])["owner"])

        try:
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(one, range(48)))
        finally:
            store.close()
        owners = {owner for _, owner in results}
        assert len(owners) == 2, owners  # both processes executed runs
        assert {o.split("-")[-2] for o in owners} == {str(w.pid) for w in workers}
        assert srv.stop() == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_dead_worker_stops_the_server(redis_url: str) -> None:
    srv = ServerProcess(redis_url=redis_url, args=["--workers", "2"]).start()
    try:
        workers = psutil.Process(srv.proc.pid).children()  # type: ignore[union-attr]
        os.kill(workers[0].pid, signal.SIGKILL)
        assert srv.proc is not None
        code = srv.proc.wait(timeout=20)
        assert code != 0
        psutil.wait_procs(workers, timeout=10)
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        srv.stop()
        srv.clear_keys()
