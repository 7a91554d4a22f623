"""Keys and capacity: 401 without or with a wrong bearer key, 429 with Retry-After when the queue is full."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from server_proc import ServerProcess

from orchestrator.server import ServerSettings, is_loopback

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    env = {"ORCHESTRATOR_API_KEYS": f"other-key,{KEY}", "ORCHESTRATOR_MAX_CONCURRENT_RUNS": "1",
           "ORCHESTRATOR_MAX_QUEUED_RUNS": "1", "ORCHESTRATOR_CORS_ORIGINS": "https://ui.example"}
    with ServerProcess(redis_url=redis_url, env=env) as srv:
        yield srv


SLEEP = {
    "workflow": {
        "name": "nap",
        "inputs": [{"name": "text", "modality": "text"}],
        "nodes": [{"id": "nap", "tool": "testsrv.sleep", "params": {"seconds": 30}, "inputs": {"text": "text"}}],
        "outputs": [{"name": "text", "source": "nap.text"}],
    },
    "inputs": {"text": "zzz"},
}


def test_keys_required(server: ServerProcess) -> None:
    for path in ("/v1/tools", "/v1/runs", "/v1/models", "/metrics", "/v1/artifacts/sha256:" + "0" * 64):
        r = httpx.get(server.url(path))
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["type"] == "AuthenticationError"
        wrong = httpx.get(server.url(path), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
    assert httpx.post(server.url("/v1/runs"), json=SLEEP).status_code == 401
    assert httpx.get(server.url("/v1/tools"), headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(server.url("/v1/tools"), params={"api_key": KEY}).status_code == 200
    assert httpx.get(server.url("/healthz")).status_code == 200  # probes stay open
    assert httpx.get(server.url("/readyz")).status_code == 200
    preflight = httpx.options(server.url("/v1/chat/completions"), headers={
        "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://ui.example"


def test_openai_client_needs_the_key(server: ServerProcess) -> None:
    bad = openai.OpenAI(base_url=server.url("/v1"), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=server.url("/v1"), api_key=KEY, max_retries=0)
    assert "orchestrator" in [m.id for m in good.models.list()]


def test_queue_full_is_429_with_retry_after(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with server.client(headers=auth) as http:
        running = http.post("/v1/runs", json=SLEEP)
        queued = http.post("/v1/runs", json=SLEEP)
        assert running.status_code == 202 and queued.status_code == 202
        try:
            full = http.post("/v1/runs", json=SLEEP)
            assert full.status_code == 429, full.text
            assert int(full.headers["retry-after"]) >= 1
            assert full.json()["error"]["type"] == "QueueFull"
            client = openai.OpenAI(base_url=server.url("/v1"), api_key=KEY, max_retries=0)
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="orchestrator", messages=[{"role": "user", "content": "hi"}])
            assert http.get("/v1/runs/" + queued.json()["id"]).json()["status"] == "queued"
            metrics = http.get("/metrics").text
            assert "orchestrator_run_queue_depth 1.0" in metrics
            assert "orchestrator_runs_rejected_total 2.0" in metrics
        finally:
            for r in (queued, running):
                http.delete("/v1/runs/" + r.json()["id"])
        assert http.get("/v1/runs/" + queued.json()["id"]).json()["status"] == "cancelled"
        deadline = time.monotonic() + 10
        while http.post("/v1/runs", json={**SLEEP, "workflow": {**SLEEP["workflow"], "nodes": [
                {**SLEEP["workflow"]["nodes"][0], "params": {"seconds": 0}}]}}).status_code != 202:
            assert time.monotonic() < deadline, "capacity did not come back after cancelling"
            time.sleep(0.1)


def test_non_loopback_without_keys_is_refused() -> None:
    from orchestrator.errors import ConfigError
    from orchestrator.server import serve

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    with pytest.raises(ConfigError, match="API keys"):
        serve(settings=ServerSettings(host="0.0.0.0", port=0))


def test_settings_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", "a, b ,c")
    monkeypatch.setenv("ORCHESTRATOR_CORS_ORIGINS", '["https://x.example"]')
    s = ServerSettings()
    assert s.api_keys == ["a", "b", "c"] and s.cors_origins == ["https://x.example"]


async def test_concurrent_submissions_never_exceed_the_queue(tmp_path):
    """The capacity check and the slot reservation happen without an await in between."""
    import asyncio

    from orchestrator.artifacts import LocalArtifactStore
    from orchestrator.runs import Outcome
    from orchestrator.server._runs import QueueFull, RunManager
    from orchestrator.server.settings import ServerSettings

    async def slow(job):
        await asyncio.sleep(0.5)
        yield Outcome("succeeded")

    manager = RunManager(LocalArtifactStore(tmp_path), ServerSettings(max_concurrent_runs=1, max_queued_runs=1))
    await manager.start()
    try:
        results = await asyncio.gather(*(manager.submit("graph", slow) for _ in range(20)), return_exceptions=True)
        accepted = [r for r in results if not isinstance(r, BaseException)]
        assert len(accepted) == 2
        assert all(isinstance(r, QueueFull) for r in results if isinstance(r, BaseException))
    finally:
        await manager.stop()


def test_run_options_take_named_profiles_only():
    from pydantic import ValidationError

    from orchestrator.server.schemas import RunOptions

    assert RunOptions(profile="tiny").profile == "tiny"
    for bad in ("/etc/passwd", "../x", "huge"):
        with pytest.raises(ValidationError):
            RunOptions(profile=bad)
