"""The server's executors: a run's inputs fetched, then its steps from the run service.

An executor is an async generator over one :class:`~orchestrator.server._runs.RunJob`:
it yields the run's events, and last an :class:`~orchestrator.runs.Outcome` (see
:class:`orchestrator.runs.RunService`). URL inputs are fetched here, at run time, so a
slow download never holds up the ``202 Accepted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.runs import Step
from orchestrator.workflow import CompiledWorkflow

from ._inputs import resolve_input
from ._runs import Executor, RunJob
from ._state import ServerState
from .schemas import InputValue, RunOptions

__all__ = ["agent_executor", "fetch_pending", "workflow_executor"]


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
        job.record.inputs[name] = ref.model_dump(mode="json")
    return out


def workflow_executor(state: ServerState, compiled: CompiledWorkflow, refs: dict[str, ArtifactRef],
                      pending: dict[str, InputValue], options: RunOptions) -> Executor:
    """Run a compiled workflow on the engine, streaming its typed events."""
    declared = {i.name: Modality(i.modality) for i in compiled.workflow.inputs}

    async def execute(job: RunJob) -> AsyncIterator[Step]:
        inputs = dict(refs)
        inputs.update(await fetch_pending(state, job, pending, declared))
        async for step in state.service.workflow(compiled, inputs, run_id=job.id, cancel=job.cancel,
                                                 seed=options.seed, cache=options.cache, profile=options.profile):
            yield step

    return execute


def agent_executor(state: ServerState, prompt: str, refs: dict[str, ArtifactRef], pending: dict[str, InputValue],
                   options: RunOptions) -> Executor:
    """Plan and execute a prompt with the agent (HuggingGPT style)."""

    async def execute(job: RunJob) -> AsyncIterator[Step]:
        inputs = dict(refs)
        inputs.update(await fetch_pending(state, job, pending, {}))
        async for step in state.service.prompt(prompt, inputs, run_id=job.id, cancel=job.cancel,
                                               session_id=options.session_id, seed=options.seed,
                                               cache=options.cache, profile=options.profile):
            yield step

    return execute
