"""Server hardening, against real ``orchestrator serve`` processes: store faults end runs,
bombs stop at the edge, the HTTP edge answers 4xx to client mistakes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from server_proc import ServerProcess
from test_server_api import sleep_wf, submit, wait_run

from orchestrator._redis_server import PrivateRedis


def _wait_status(http: httpx.Client, path: str, status: int, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(path)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


# ---------------------------------------------------------------------- store faults
@pytest.mark.slow
def test_redis_restart_ends_inflight_runs_and_the_server_recovers() -> None:
    with PrivateRedis() as redis_server, ServerProcess(redis_url=redis_server.url) as srv, srv.client() as http:
        run = submit(http, {"workflow": sleep_wf(2.0), "inputs": {"text": "hi"}})
        assert wait_status_of(http, run["id"], "running")
        port = redis_server.port
        redis_server.stop()

        ready = _wait_status(http, "/readyz", 503)
        assert ready.status_code == 503, ready.text
        assert "Redis" not in ready.text and str(port) not in ready.text  # nothing internal on an open route
        assert http.post("/v1/runs", json={"workflow": sleep_wf(0), "inputs": {"text": "x"}}).status_code == 503

        done = wait_run(http, run["id"], timeout=30)  # the in-flight run ends, with the reason
        assert done["status"] == "failed", done
        assert "unavailable" in str(done["error"]).lower(), done["error"]

        redis_server.start(port=port)  # back, empty
        assert _wait_status(http, "/readyz", 200).status_code == 200
        again = submit(http, {"workflow": sleep_wf(0), "inputs": {"text": "again"}})
        final = wait_run(http, again["id"])
        assert final["status"] == "succeeded", final
        assert final["outputs"]["result"]
        # the failed run's final state reaches the restarted store too (the heartbeat saves it)
        deadline = time.monotonic() + 20
        while (old := http.get(f"/v1/runs/{run['id']}")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert old.status_code == 200 and old.json()["status"] == "failed"


def wait_status_of(http: httpx.Client, run_id: str, status: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = http.get(f"/v1/runs/{run_id}").json()
        if doc["status"] == status:
            return True
        time.sleep(0.05)
    return False
