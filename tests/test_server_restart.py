"""Run state lives in Redis: a restarted server answers for finished runs and reports in-flight ones as interrupted."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from server_proc import ServerProcess

from orchestrator.artifacts import RedisArtifactStore


def _wf(tool: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "w",
        "inputs": [{"name": "text", "modality": "text"}],
        "nodes": [{"id": "n", "tool": tool, "params": params, "inputs": {"text": "text"}}],
        "outputs": [{"name": "text", "source": "n.text"}],
    }


def _wait(http: httpx.Client, run_id: str, statuses: set[str], timeout: float = 15) -> dict[str, Any]:
    """Wait for a run status; "running" also waits for its node to have started."""
    deadline = time.monotonic() + timeout
    while True:
        doc = http.get(f"/v1/runs/{run_id}").json()
        node_started = doc["nodes"].get("n", {}).get("status") == "running"
        if doc["status"] in statuses and (doc["status"] != "running" or node_started):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)


def _wait_stored_start(store: RedisArtifactStore, run_id: str, timeout: float = 15) -> None:
    """Wait until the node's start is in the run's stored log: a crash loses what is not stored yet."""
    deadline = time.monotonic() + timeout
    while not any(e.get("type") == "node_started" for _, e in store.read_events(f"run:{run_id}")):
        assert time.monotonic() < deadline, f"run {run_id}: no node_started stored"
        time.sleep(0.05)


def _events(http: httpx.Client, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    event = None
    with http.stream("GET", f"/v1/runs/{run_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[7:]
            elif line.startswith("data:"):
                out.append((event, json.loads(line[5:])))
    return out


def test_restart_after_crash_and_after_clean_stop(redis_url: str) -> None:
    srv = ServerProcess(redis_url=redis_url, env={"ORCHESTRATOR_LEASE_SECONDS": "1"})
    srv.start()
    try:
        with srv.client() as http:
            finished = http.post("/v1/runs", json={"workflow": _wf("testsrv.steps", {"steps": 2}),
                                                   "inputs": {"text": "kept"}}).json()
            done = _wait(http, finished["id"], {"succeeded"})
            in_flight = http.post("/v1/runs", json={"workflow": _wf("testsrv.sleep", {"seconds": 60}),
                                                    "inputs": {"text": "lost"}}).json()
            _wait(http, in_flight["id"], {"running"})
            store = RedisArtifactStore(redis_url, prefix=srv.prefix)
            try:
                _wait_stored_start(store, in_flight["id"])
            finally:
                store.close()
        srv.stop(kill=True)  # a crash: nothing is written on the way out

        srv.start()
        with srv.client() as http:
            again = http.get(f"/v1/runs/{finished['id']}").json()
            assert again["status"] == "succeeded"
            assert again["outputs"]["text"]["id"] == done["outputs"]["text"]["id"]
            assert httpx.get(again["outputs"]["text"]["url"]).text == "KEPT"
            events = _events(http, finished["id"])
            assert [e for e, _ in events][-2:] == ["run_finished", "end"]

            lost = _wait(http, in_flight["id"], {"interrupted"}, timeout=10)
            assert lost["error"]["type"] == "RunInterrupted"
            assert lost["nodes"]["n"]["status"] == "cancelled"
            events = _events(http, in_flight["id"])
            kinds = [e for e, _ in events]
            assert kinds[0] == "run_started" and kinds[-2:] == ["run_failed", "end"]
            assert events[-2][1]["status"] == "interrupted" and events[-1][1]["status"] == "interrupted"

            # a clean stop records its own unfinished runs as interrupted on the way out
            second = http.post("/v1/runs", json={"workflow": _wf("testsrv.sleep", {"seconds": 60}),
                                                 "inputs": {"text": "stopped"}}).json()
            _wait(http, second["id"], {"running"})
        assert srv.stop() in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown
        store = RedisArtifactStore(redis_url, prefix=srv.prefix)
        try:
            record = store.get_record("runs", second["id"])
            assert record is not None and record["status"] == "interrupted"
            assert "shut down" in record["error"]["message"]
            assert store.read_events(f"run:{second['id']}")[-1][1]["status"] == "interrupted"
        finally:
            store.close()
    except AssertionError:
        print(srv.log())
        raise
    finally:
        srv.stop(kill=True)
        srv.clear_keys()
