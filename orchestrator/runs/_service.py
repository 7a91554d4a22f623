"""The run service: what a run executes, and how its events fold into its record.

A run is a stream of steps: its events (the engine's and the agent's, as typed
models or JSON), then one :class:`Outcome`. :class:`RunService` makes that stream
for each kind of run (a compiled workflow, a prompt, a chat turn) and :func:`execute`
drives one: every event becomes JSON, is folded into the :class:`RunRecord` and
handed to ``emit`` (the server appends it to the run's log, the CLI draws progress).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel

from orchestrator.artifacts import ArtifactRef, ArtifactStore
from orchestrator.errors import OrchestratorError
from orchestrator.workflow import CompiledWorkflow
from orchestrator.workflow.events import RunFailed, RunFinished

from ._agent import AgentBackend
from ._record import Outcome, RunRecord, event_json, flat_outputs

__all__ = ["Emit", "RunService", "Step", "execute", "outcome_from_engine"]

logger = logging.getLogger("orchestrator.runs")

Step = BaseModel | Mapping[str, Any] | Outcome
"""One item of a run's stream: an event (a typed model or its JSON), or, last, the :class:`Outcome`."""
Emit = Callable[[dict[str, Any]], Awaitable[object]]
"""Receives each event as JSON, after it was folded into the record."""


def outcome_from_engine(final: RunFinished | RunFailed | None) -> Outcome:
    """The outcome a workflow's terminal event describes (a list output is numbered: ``x``, ``x_2`` …)."""
    if final is None:
        return Outcome("failed", error={"type": "RunError", "message": "the workflow ended without a final event"})
    if isinstance(final, RunFinished):
        return Outcome(final.status, outputs=flat_outputs(final.outputs), errors=dict(final.errors))
    return Outcome(final.status, errors=dict(final.errors), error=dict(final.error))


async def execute(record: RunRecord, steps: AsyncIterator[Step], *, emit: Emit | None = None,
                  node_tools: dict[str, str] | None = None) -> Outcome:
    """Drive one run's steps: fold each event into ``record`` (and ``node_tools``), pass it to ``emit``,
    and return the outcome. A run that raises ends ``failed`` with the error; cancellation
    (``asyncio.CancelledError``) propagates. The caller writes the outcome in (:meth:`RunRecord.finish`)."""
    outcome: Outcome | None = None
    try:
        async for step in steps:
            if isinstance(step, Outcome):
                outcome = step
                continue
            doc = event_json(step)
            doc.setdefault("run_id", record.id)
            record.fold(doc, node_tools)
            if emit is not None:
                await emit(doc)
    except OrchestratorError as exc:
        return Outcome("failed", error=exc.to_dict(), errors={"<run>": str(exc)})
    except Exception as exc:  # noqa: BLE001 - a run's failure is its outcome, not the caller's crash
        logger.exception("run %s crashed", record.id)
        message = f"{type(exc).__name__}: {exc}"
        return Outcome("failed", error={"type": type(exc).__name__, "message": message}, errors={"<run>": message})
    if outcome is None:
        return Outcome("failed", error={"type": "RunError", "message": "the run ended without a result"})
    return outcome


class RunService:
    """Makes the step stream of each kind of run (no web imports; the CLI and the server share it).

    >>> service = RunService(store, agent=AgentBackend(store=store, core_settings=settings))  # doctest: +SKIP
    >>> record = RunRecord(id="r1", kind="graph")                                              # doctest: +SKIP
    >>> outcome = await execute(record, service.workflow(compiled, {"text": ref}))              # doctest: +SKIP
    >>> record.finish(outcome)                                                                 # doctest: +SKIP
    """

    def __init__(self, store: ArtifactStore, *, agent: AgentBackend) -> None:
        self.store = store
        self.agent = agent

    async def workflow(self, compiled: CompiledWorkflow, inputs: Mapping[str, ArtifactRef], *,
                       run_id: str | None = None, cancel: threading.Event | None = None, seed: int | None = None,
                       cache: bool = True, profile: str | None = None) -> AsyncIterator[Step]:
        """A compiled workflow on the engine: its typed events, then its outcome."""
        final: RunFinished | RunFailed | None = None
        async for event in compiled.astream(dict(inputs), store=self.store, cache=cache, seed=seed, run_id=run_id,
                                            cancel=cancel, profile=profile):
            if isinstance(event, (RunFinished, RunFailed)):
                final = event
            yield event
        yield outcome_from_engine(final)

    def prompt(self, prompt: str, inputs: Mapping[str, ArtifactRef], *, run_id: str, cancel: threading.Event,
               session_id: str | None = None, seed: int | None = None, cache: bool = True,
               profile: str | None = None) -> AsyncIterator[Step]:
        """A prompt planned and executed by the agent: its events, then its outcome."""
        return self.agent.run(prompt, inputs=dict(inputs), run_id=run_id, cancel=cancel, session_id=session_id,
                              seed=seed, cache=cache, profile=profile)

    def chat(self, message: str, media: Mapping[str, ArtifactRef], *, run_id: str, cancel: threading.Event,
             session_id: str | None = None, seed: int | None = None) -> AsyncIterator[Step]:
        """One chat turn with signal spans: its events, then its outcome."""
        return self.agent.chat(message, media=dict(media), run_id=run_id, cancel=cancel, session_id=session_id,
                               seed=seed)
