"""Runs without the web: one service that executes a prompt, a prebuilt graph or a workflow
document, folds its events into a typed :class:`RunRecord` and ends with a typed :class:`Outcome`.

The CLI (``orchestrator run``, whose ``run.json`` is the record) and the server (whose
run manager adds the queue, leases and persistence) both run through it::

    service = RunService(store, agent=AgentBackend(store=store, core_settings=settings))
    record = RunRecord(id="r1", kind="graph", request={"graph": "caption-and-speak"})
    record.start()
    record.finish(await execute(record, service.workflow(compiled, inputs)))
"""

from __future__ import annotations

from ._agent import AgentBackend, agent_outcome, chat_outcome
from ._record import ACTIVE, TERMINAL, Outcome, RunKind, RunRecord, RunStatus, event_json, flat_outputs
from ._service import Emit, RunService, Step, execute, outcome_from_engine

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "AgentBackend",
    "Emit",
    "Outcome",
    "RunKind",
    "RunRecord",
    "RunService",
    "RunStatus",
    "Step",
    "agent_outcome",
    "chat_outcome",
    "event_json",
    "execute",
    "flat_outputs",
    "outcome_from_engine",
]
