"""A real ``orchestrator serve`` process on a free loopback port, for tests and benchmarks.

::

    with ServerProcess(redis_url=url, env={"ORCHESTRATOR_API_KEYS": "k"}) as srv:
        httpx.get(srv.url("/healthz"))

The server runs ``python -m orchestrator serve`` against real Redis under a unique
key prefix (removed on exit unless ``keep_keys``), with its own data directory,
and with the small tools below registered (``ORCHESTRATOR_TOOL_MODULES``), so
tests can run slow, stepped or failing nodes without models.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ServerProcess", "free_port", "register_test_tools"]

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_test_tools() -> list[Any]:
    """Tools for server tests: ``testsrv.sleep`` (async, cancellable), ``testsrv.steps``
    (progress events), ``testsrv.fail``, ``testsrv.split`` (a list output). Called inside the server process only."""
    from pydantic import BaseModel, Field

    from orchestrator import tool

    class Sleep(BaseModel):
        seconds: float = Field(default=1.0, ge=0, le=120)

    @tool("testsrv.sleep", task="test-sleep", description="Wait, then echo the text (async, cancellable).",
          inputs={"text": "text"}, outputs={"text": "text"}, params=Sleep, register=False)
    async def sleep(text: str, *, params: Sleep) -> str:
        await asyncio.sleep(params.seconds)
        return text

    class Steps(BaseModel):
        steps: int = Field(default=3, ge=1, le=100)
        delay: float = Field(default=0.0, ge=0, le=5)

    @tool("testsrv.steps", task="test-steps", description="Report progress in steps, then upper-case the text.",
          inputs={"text": "text"}, outputs={"text": "text"}, params=Steps, register=False)
    def steps(text: str, *, params: Steps, ctx: Any) -> str:
        for i in range(params.steps):
            time.sleep(params.delay)
            ctx.progress(i + 1, params.steps)
        return text.upper()

    @tool("testsrv.fail", task="test-fail", description="Always fails.", inputs={"text": "text"},
          outputs={"text": "text"}, register=False)
    def fail(text: str) -> str:
        raise ValueError(f"refusing {text!r}")

    @tool("testsrv.split", task="test-split", description="Split the text into words (a list output).",
          inputs={"text": "text"}, outputs={"words": {"modality": "text", "many": True}}, register=False)
    def split(text: str) -> list[str]:
        return text.split()

    return [sleep, steps, fail, split]


class ServerProcess:
    """Start, stop, kill and restart one server process."""

    def __init__(self, *, redis_url: str | None = None, prefix: str | None = None, env: dict[str, str] | None = None,
                 port: int | None = None, data_dir: str | None = None, keep_keys: bool = False,
                 args: list[str] | None = None) -> None:
        self.redis_url = redis_url
        self.prefix = prefix or f"test:srv:{uuid.uuid4().hex[:10]}:"
        self.port = port or free_port()
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="orch-srv-")
        self.extra_env = dict(env or {})
        self.keep_keys = keep_keys
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.data_dir) / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
        env.update({
            "ORCHESTRATOR_KEY_PREFIX": self.prefix,
            "ORCHESTRATOR_DATA_DIR": self.data_dir,
            "ORCHESTRATOR_TOOL_MODULES": "server_proc:register_test_tools",
            "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH", "")) if p),
        })
        if os.environ.get("ORCHESTRATOR_ZOO_DIR"):
            env["ORCHESTRATOR_ZOO_DIR"] = os.environ["ORCHESTRATOR_ZOO_DIR"]
        if self.redis_url:
            env["ORCHESTRATOR_REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(self.port), "--log-level", "warning",
             *self.args],
            cwd=str(ROOT), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )
        self._log = log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url("/readyz"), timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful: unfinished runs are marked interrupted) or SIGKILL (a crash)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        code = self.proc.returncode
        self.proc = None
        self._log.close()
        return code

    def restart(self, *, kill: bool = False) -> ServerProcess:
        self.stop(kill=kill)
        return self.start()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 30), **kwargs)

    def clear_keys(self) -> None:
        if not self.redis_url:
            return
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])
        finally:
            client.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not self.keep_keys:
            self.clear_keys()
