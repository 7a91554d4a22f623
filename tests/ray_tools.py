"""Tools for the Ray executor tests; replicas load them through the config's ``imports``."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from orchestrator import ToolRegistry, tool
from orchestrator.registry import default_registry

registry = ToolRegistry()


class SlowParams(BaseModel):
    steps: int = Field(default=20, ge=1)
    step_seconds: float = Field(default=0.1, ge=0)


@tool("raytest.slow", task="text-transform", description="Upper-case slowly; reports its process id as progress.",
      inputs={"text": "text"}, outputs={"text": "text"}, params=SlowParams, register=False)
def slow(text: str, *, params: SlowParams, ctx) -> str:
    for i in range(params.steps):
        if ctx.cancelled:
            ctx.store.put_record("raytest", f"cancelled:{ctx.node}", {"step": i, "pid": os.getpid()})
            return "cancelled"
        ctx.progress(i + 1, params.steps, f"pid={os.getpid()}")
        time.sleep(params.step_seconds)
    return f"{text.upper()} from pid {os.getpid()}"


registry.register(slow)


class WhichParams(BaseModel):
    model: str | None = None


@tool("raytest.which", task="text-transform", description="Say which process served the call (a model-routing probe).",
      inputs={"text": "text"}, outputs={"text": "text"}, params=WhichParams, register=False)
def which(text: str, *, params: WhichParams) -> str:
    return f"{params.model} {os.getpid()}"


registry.register(which)

for _builtin in default_registry:  # workflows compiled with this registry also see every built-in tool
    if _builtin.name not in registry:
        registry.register(_builtin)
