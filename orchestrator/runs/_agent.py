"""The run service's seam to the agent: prompts and chat messages in, events and an outcome out.

The agent (:class:`orchestrator.agent.Agent`) is built the first time a prompt or
chat run needs it, from the core settings (``llm``, ``profile``) through
:func:`orchestrator.agent.make_planner`'s spec handling, or injected
(``create_app(agent=...)``). A request-mode run yields the agent's events as JSON
and then one :class:`Outcome` made from the typed ``AgentResult`` the final
``agent_finished`` event carries; a chat turn's outcome comes from its span and
``chat_done`` events. No web imports: the CLI and the server run prompts through the same code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.agent import Agent, AgentResult, events
from orchestrator.artifacts import ArtifactRef, ArtifactStore
from orchestrator.registry import ToolRegistry
from orchestrator.settings import Settings
from orchestrator.workflow.events import RunFinished

from ._record import Outcome, flat_outputs

__all__ = ["AgentBackend", "agent_outcome", "chat_outcome"]

logger = logging.getLogger("orchestrator.runs.agent")


class AgentBackend:
    """Runs prompts (plan mode) and chat messages (signal-span mode) on an agent.

    ``factory(profile)`` builds the agent for a profile (``None``: the settings' one);
    by default an :class:`~orchestrator.agent.Agent` on the store with ``llm`` and
    ``profile`` from the core settings.
    """

    def __init__(self, agent: Agent | None = None, *, store: ArtifactStore, core_settings: Settings,
                 registry: ToolRegistry | None = None,
                 factory: Callable[[str | None], Agent] | None = None) -> None:
        self._agents: dict[str, Agent] = {"": agent} if agent is not None else {}
        self._factory = factory or self._build
        self.store = store
        self.core = core_settings
        self.registry = registry
        self._lock = threading.Lock()

    def get(self, profile: str | None = None) -> Agent:
        """The agent for ``profile`` (default: the settings' profile), built on first use."""
        key = profile or ""
        agent = self._agents.get(key)
        if agent is not None:
            return agent
        with self._lock:
            if key not in self._agents:
                self._agents[key] = self._factory(profile)
        return self._agents[key]

    def _build(self, profile: str | None) -> Agent:
        return Agent(llm=self.core.llm, store=self.store, profile=profile or self.core.profile,
                     registry=self.registry, settings=self.core)

    @property
    def llm_name(self) -> str:
        return str(self.core.llm)

    # ------------------------------------------------------------------ runs
    async def run(self, prompt: str, *, inputs: dict[str, ArtifactRef], run_id: str, cancel: threading.Event,
                  session_id: str | None = None, seed: int | None = None, cache: bool = True,
                  profile: str | None = None) -> AsyncIterator[BaseModel | Outcome]:
        """Plan-and-execute a prompt: yields the typed events (:data:`~orchestrator.agent.events.AnyEvent`),
        then an :class:`Outcome`."""
        agent = await asyncio.to_thread(self.get, profile)
        result: AgentResult | None = None
        async for event in agent.astream(prompt, inputs or None, session_id, seed=seed, cache=cache,
                                         agent_run=run_id, cancel=cancel):
            if isinstance(event, events.AgentFinished):
                result = event.result
            yield event
        if result is None:
            yield Outcome("failed", error={"type": "AgentError", "message": "the agent ended without a result"})
            return
        yield agent_outcome(result)

    async def chat(self, message: str, *, media: dict[str, ArtifactRef], run_id: str, cancel: threading.Event,
                   session_id: str | None = None, seed: int | None = None) -> AsyncIterator[BaseModel | Outcome]:
        """One chat turn with signal spans: yields the typed events, then an :class:`Outcome`."""
        agent = await asyncio.to_thread(self.get)
        seen: list[BaseModel] = []
        async for event in agent.achat_stream(session_id or uuid.uuid4().hex, message, media or None, seed=seed,
                                              cancel=cancel):
            seen.append(event)
            yield event
        yield chat_outcome(seen)


def agent_outcome(result: AgentResult) -> Outcome:
    """A request's :class:`Outcome` from the agent's typed result.

    ``no_tools`` (the LLM answered without tools) is ``succeeded``; every task output
    (cached ones included) is an output named ``t<id>_<port>``; each task that did not
    succeed has an error; ``refusals`` lists what was refused and why.
    """
    errors: dict[str, str] = {}
    for t in sorted(result.tasks.values(), key=lambda t: t.id):
        if not t.ok:
            errors[f"t{t.id}_{t.task}"] = t.error or t.note or t.status
    status = "succeeded" if result.status == "no_tools" else result.status
    error: dict[str, Any] | None = None
    if status == "refused":
        error = {"type": "Refused", "message": "; ".join(result.refusals) or "the request was refused"}
    elif status in ("failed", "cancelled"):
        message = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "; ".join(str(p) for p in result.problems)
        error = {"type": "AgentError" if status == "failed" else "RunCancelled", "message": message or status}
    plan = result.plan.model_dump(mode="json") if result.plan is not None else None
    return Outcome(status=status, outputs=dict(result.outputs), errors=errors, error=error, answer=result.answer,
                   plan=plan, refusals=result.refusals)


def chat_outcome(seen: Sequence[BaseModel]) -> Outcome:
    """A chat turn's :class:`Outcome` from its events: each span's media (and a ``<plan>`` span's other
    outputs), each span's error, the message."""
    outputs: dict[str, ArtifactRef] = {}
    errors: dict[str, str] = {}
    answer: str | None = None
    for ev in seen:
        if isinstance(ev, events.SpanFinished):
            label = f"{ev.kind}_{ev.index + 1}"
            if ev.error:
                errors[label] = ev.error
            for i, ref in enumerate(ev.refs):
                outputs[label if i == 0 else f"{label}_{i + 1}"] = ref
        elif isinstance(ev, events.ChatDone):
            answer = ev.message
    have = {r.id for r in outputs.values()}
    for ev in seen:  # what the spans' workflows produced besides their media (a <plan> span's text)
        if isinstance(ev, RunFinished):
            for name, one in flat_outputs(ev.outputs).items():
                if one.id not in have:
                    have.add(one.id)
                    outputs[name] = one
    if answer is None:
        return Outcome("failed", outputs=outputs, errors=errors,
                       error={"type": "AgentError", "message": "the chat turn ended without a message"})
    # the message came; spans that failed are listed, and make the turn partial
    return Outcome(status="partial" if errors else "succeeded", outputs=outputs, errors=errors, answer=answer)
