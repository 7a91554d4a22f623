"""Small tools for engine tests, registered in a private registry (not the default one)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from pydantic import BaseModel, Field

from orchestrator import Audio, ToolRegistry, tool

registry = ToolRegistry()
calls: dict[str, int] = {}
_lock = threading.Lock()


def hold_interpreter(seconds: float) -> None:
    """Compute for ``seconds`` of this thread's CPU time, nothing to wait for (as a store's packing
    and parsing: work that holds the interpreter wherever it runs)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def _count(name: str) -> None:
    with _lock:
        calls[name] = calls.get(name, 0) + 1


class Suffix(BaseModel):
    suffix: str = "!"
    delay: float = Field(default=0.0, ge=0)


@tool("t.upper", task="text-transform", description="Upper-case, add a suffix, optionally sleep.",
      inputs={"text": "text"}, outputs={"text": "text"}, params=Suffix, register=False)
def upper(text: str, *, params: Suffix) -> str:
    _count("t.upper")
    time.sleep(params.delay)
    return text.upper() + params.suffix


@tool("t.aupper", task="text-transform", description="Async upper-case with a delay.",
      inputs={"text": "text"}, outputs={"text": "text"}, params=Suffix, register=False)
async def aupper(text: str, *, params: Suffix) -> str:
    _count("t.aupper")
    await asyncio.sleep(params.delay)
    return text.upper() + params.suffix


@tool("t.join", task="text-join", description="Join texts with ' + '.",
      inputs={"texts": {"modality": "text", "many": True}}, outputs={"text": "text"}, register=False)
def join(texts: list[str]) -> str:
    _count("t.join")
    return " + ".join(texts)


@tool("t.fail", task="text-transform", description="Always fails.",
      inputs={"text": "text"}, outputs={"text": "text"}, register=False)
def fail(text: str) -> str:
    raise ValueError(f"cannot handle {text!r}")


class Flaky(BaseModel):
    key: str
    failures: int = 1


_flaky_seen: dict[str, int] = {}


@tool("t.flaky", task="text-transform", description="Fails `failures` times per key, then works.",
      inputs={"text": "text"}, outputs={"text": "text"}, params=Flaky, register=False)
def flaky(text: str, *, params: Flaky) -> str:
    n = _flaky_seen.get(params.key, 0)
    _flaky_seen[params.key] = n + 1
    if n < params.failures:
        raise RuntimeError(f"transient failure {n + 1}")
    return text + f" (after {n} failures)"


class Tone(BaseModel):
    seconds: float = Field(default=0.2, gt=0, le=10)
    seed: int | None = None


@tool("t.noise", task="text-to-audio", description="Seeded noise whose length follows the text.",
      inputs={"text": "text"}, outputs={"audio": "audio"}, params=Tone, seeded=True, register=False)
def noise(text: str, *, params: Tone, ctx) -> Audio:
    _count("t.noise")
    rng = np.random.default_rng(ctx.seed)
    for step in range(3):
        ctx.progress(step + 1, 3)
    return Audio(rng.uniform(-0.5, 0.5, int(8000 * params.seconds)).astype(np.float32), 8000)


@tool("t.duration", task="audio-info", description="Describe an audio's duration.",
      inputs={"audio": "audio"}, outputs={"text": "text", "info": "json"}, register=False)
def duration(audio: Audio) -> dict:
    _count("t.duration")
    return {"text": f"{audio.duration:.2f}s", "info": {"seconds": audio.duration, "rate": audio.sample_rate}}


class Sleep(BaseModel):
    seconds: float = 5.0


@tool("t.sleep_async", task="wait", description="Sleeps (async), cancellable.",
      inputs={"text": "text"}, outputs={"text": "text"}, params=Sleep, register=False)
async def sleep_async(text: str, *, params: Sleep) -> str:
    _count("t.sleep_async")
    await asyncio.sleep(params.seconds)
    return text


@tool("t.split", task="text-split", description="Split into words; records provenance.",
      inputs={"text": "text"}, outputs={"words": {"modality": "text", "many": True}}, register=False)
def split(text: str, *, ctx) -> list[str]:
    ctx.provenance["model"] = "word-splitter-v1"
    return text.split()


@tool("t.maybe_many", task="text-split", description="A text, plus optional extras only when asked.",
      inputs={"text": "text"}, outputs={"text": "text", "extras": {"modality": "text", "many": True, "optional": True}},
      register=False)
def maybe_many(text: str) -> dict:
    return {"text": text} if " " not in text else {"text": text, "extras": text.split()}


class SlowSync(BaseModel):
    seconds: float = 0.6


@tool("t.slow_sync", task="wait", description="Blocks (sync) for a while.", inputs={"text": "text"},
      outputs={"text": "text"}, params=SlowSync, register=False)
def slow_sync(text: str, *, params: SlowSync, ctx) -> str:
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.01)
    return text + (" (stopped)" if ctx.cancelled else "")


for _t in (upper, aupper, join, fail, flaky, noise, duration, sleep_async, split, maybe_many, slow_sync):
    registry.register(_t)
