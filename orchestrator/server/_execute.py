"""How each kind of run executes: a workflow on the engine, a prompt on the agent.

An executor is an async generator over one :class:`~orchestrator.server._runs.RunJob`:
it yields the run's events, and last an :class:`~orchestrator.server._runs.Outcome`.
URL inputs are fetched here, at run time, so a slow download never holds up the
``202 Accepted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.workflow import CompiledWorkflow

from ._inputs import resolve_input
from ._outcome import Outcome
from ._runs import Executor, RunJob
from ._state import ServerState
from .schemas import InputValue, RunOptions

__all__ = ["agent_executor", "fetch_pending", "outcome_from_engine", "workflow_executor"]


async def fetch_pending(state: ServerState, job: RunJob, pending: dict[str, InputValue],
                        declared: dict[str, Modality]) -> dict[str, ArtifactRef]:
    """Fetch the URL inputs of a run (under the downloader's limits) and record them."""
    out: dict[str, ArtifactRef] = {}
    for name, value in pending.items():
        ref = await asyncio.to_thread(
            resolve_input, name, value, declared=declared.get(name), store=state.store, core_settings=state.core,
            max_bytes=state.settings.max_upload_bytes,
        )
        out[name] = ref
        job.record["inputs"][name] = ref.model_dump(mode="json")
    return out


def outcome_from_engine(final: Any) -> Outcome:
    """The outcome a workflow's terminal event (``run_finished`` / ``run_failed``) describes."""
    if final is None:
        return Outcome("failed", error={"type": "RunError", "message": "the workflow ended without a final event"})
    if final.type == "run_finished":
        return Outcome(final.status, outputs=dict(final.outputs), errors=dict(final.errors))
    return Outcome(final.status, errors=dict(final.errors), error=dict(final.error))


def workflow_executor(state: ServerState, compiled: CompiledWorkflow, refs: dict[str, ArtifactRef],
                      pending: dict[str, InputValue], options: RunOptions) -> Executor:
    """Run a compiled workflow on the engine, streaming its typed events."""
    declared = {i.name: Modality(i.modality) for i in compiled.workflow.inputs}

    async def execute(job: RunJob) -> AsyncIterator[Any]:
        inputs: dict[str, Any] = dict(refs)
        inputs.update(await fetch_pending(state, job, pending, declared))
        final = None
        async for event in compiled.astream(
            inputs, store=state.store, cache=options.cache, seed=options.seed, run_id=job.id, cancel=job.cancel,
            profile=options.profile,
        ):
            if event.type in ("run_finished", "run_failed"):
                final = event
            yield event
        yield outcome_from_engine(final)

    return execute


def agent_executor(state: ServerState, prompt: str, refs: dict[str, ArtifactRef], pending: dict[str, InputValue],
                   options: RunOptions) -> Executor:
    """Plan and execute a prompt with the agent (HuggingGPT style)."""

    async def execute(job: RunJob) -> AsyncIterator[Any]:
        inputs: dict[str, ArtifactRef] = dict(refs)
        inputs.update(await fetch_pending(state, job, pending, {}))
        async for item in state.agent.run(
            prompt, inputs=inputs, run_id=job.id, cancel=job.cancel, session_id=options.session_id,
            seed=options.seed, cache=options.cache, profile=options.profile,
        ):
            yield item

    return execute
