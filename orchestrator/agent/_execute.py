"""One plan -> one workflow -> the engine: how the agent runs a validated, selected plan.

Every task of the plan, text tasks included (they are tools that ask the LLM),
becomes a node of a single :class:`~orchestrator.workflow.Workflow`; the engine
runs it (parallel branches, cache, retries, cancellation) and its events are
folded into one :class:`TaskOutcome` per task by :func:`fold_nodes`. Request
mode and chat spans both run through :func:`execute_plan`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from orchestrator.artifacts import ArtifactRef, ArtifactStore
from orchestrator.errors import PlanError, WorkflowError
from orchestrator.workflow import CompiledWorkflow
from orchestrator.workflow.events import NodeSummary, RunFailed, RunFinished, fold_node

from .llm import LLMClient
from .plan import ValidatedPlan, compile_plan

__all__ = ["RunOptions", "TaskOutcome", "TaskStatus", "execute_plan", "fold_nodes", "run_workflow"]

logger = logging.getLogger("orchestrator.agent")

TaskStatus = Literal["succeeded", "cached", "failed", "skipped", "refused", "cancelled"]
Emit = Callable[[Any], None]


@dataclass
class TaskOutcome:
    """What became of one plan task (``refused``: its tool declined it, e.g. no LLM offline)."""

    id: int
    task: str
    kind: str  # tool | llm
    status: TaskStatus
    tool: str | None = None
    model: str | None = None
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "cached")


@dataclass
class RunOptions:
    """Per-run settings shared by request mode and chat spans."""

    agent_run: str
    store: ArtifactStore
    seed: int | None
    cache: bool
    cancel: threading.Event | None = None
    llm: LLMClient | None = None
    """The run's LLM client (bounded by the run's deadline), handed to text tools."""
    llm_label: str = "offline"
    deadline: float | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


@dataclass(frozen=True)
class NodeEnd:
    """One node's end, from the engine's events (see :func:`orchestrator.workflow.events.fold_node`)."""

    status: TaskStatus
    outputs: dict[str, ArtifactRef]
    error: str | None = None
    seconds: float = 0.0


def fold_nodes(events: list[BaseModel]) -> dict[str, NodeEnd]:
    """Each node's end, by the one node-summary fold over the run's events."""
    nodes: dict[str, NodeSummary] = {}
    for ev in events:
        fold_node(nodes, ev.model_dump(mode="json"))
    out: dict[str, NodeEnd] = {}
    for name, entry in nodes.items():
        status = entry["status"]
        if status == "skipped" and entry.get("reason") == "run cancelled":
            status = "cancelled"
        if status in ("pending", "running"):
            continue
        outputs: dict[str, ArtifactRef] = {}
        for port, ref in (entry.get("outputs") or {}).items():
            if isinstance(ref, list):  # a ``many`` port: one name per artifact
                outputs.update({f"{port}_{i}": ArtifactRef.model_validate(r) for i, r in enumerate(ref)})
            else:
                outputs[port] = ArtifactRef.model_validate(ref)
        out[name] = NodeEnd(status, outputs, entry.get("error") or entry.get("reason"),
                                float(entry.get("seconds") or 0.0))
    return out


async def run_workflow(compiled: CompiledWorkflow, inputs: dict[str, Any], emit: Emit, **options: Any
                       ) -> tuple[list[BaseModel], RunFinished | RunFailed | None]:
    """Run on the engine, forwarding every event; returns the events and the final
    ``run_finished`` / ``run_failed`` event."""
    seen: list[BaseModel] = []
    final: RunFinished | RunFailed | None = None
    async for ev in compiled.astream(inputs, **options):
        emit(ev)
        seen.append(ev)
        if isinstance(ev, (RunFinished, RunFailed)):
            final = ev
    return seen, final


async def execute_plan(vplan: ValidatedPlan, *, registry: Any, settings: Any, profile: Any, opts: RunOptions,
                       emit: Emit, retries: int = 0, name: str | None = None) -> tuple[dict[int, TaskOutcome], Any]:
    """Run a selected plan as one workflow; returns each task's outcome and the run's final event."""
    outcomes: dict[int, TaskOutcome] = {}
    # 1. tasks no tool can run fail; tasks that need their outputs are skipped
    for i in vplan.order:
        t = vplan.tasks[i]
        if t.tool is None and not t.tools:
            outcomes[i] = TaskOutcome(i, t.task, t.kind, "failed", error=t.unavailable or f"no tool runs {t.task}")
        elif t.unavailable is not None:
            outcomes[i] = TaskOutcome(i, t.task, t.kind, "failed", error=t.unavailable)
        else:
            bad = next((d for d in t.deps if d in outcomes), None)
            if bad is not None:
                why = outcomes[bad].error or outcomes[bad].status
                outcomes[i] = TaskOutcome(i, t.task, t.kind, "skipped", tool=t.tool,
                                          error=f"task {bad} ({vplan.tasks[bad].task}) {outcomes[bad].status}: {why}")
    ids = [i for i in vplan.order if i not in outcomes]
    if not ids:
        return outcomes, None
    if opts.cancelled:
        for i in ids:
            outcomes[i] = TaskOutcome(i, vplan.tasks[i].task, vplan.tasks[i].kind, "cancelled", error="run cancelled")
        return outcomes, None
    # 2. text tasks say which LLM answers them (part of their cache key) and get their options
    for i in ids:
        t = vplan.tasks[i]
        if t.kind == "llm":
            t.params.update(llm=opts.llm_label, options=dict(t.options))
    # 3. one workflow, one run
    try:
        compiled_plan = compile_plan(vplan, task_ids=ids, name=name or f"agent-{opts.agent_run[:8]}", retries=retries)
        compiled = compiled_plan.workflow.compile(registry=registry, settings=settings)
    except (PlanError, WorkflowError) as exc:
        for i in ids:
            outcomes[i] = TaskOutcome(i, vplan.tasks[i].task, vplan.tasks[i].kind, "failed", tool=vplan.tasks[i].tool,
                                      error=f"the workflow is invalid: {exc}")
        return outcomes, None
    extra = {"cancel": opts.cancel} if opts.cancel is not None else {}
    events, final = await run_workflow(compiled, compiled_plan.run_inputs, emit, store=opts.store, cache=opts.cache,
                                       seed=opts.seed, profile=profile, llm=opts.llm, **extra)
    nodes = fold_nodes(events)
    run_error = (final.errors if final is not None else {}).get("<run>", "did not run")
    for i in ids:
        t = vplan.tasks[i]
        node = nodes.get(compiled_plan.node_of_task[i], NodeEnd("skipped", {}, run_error))
        outcomes[i] = TaskOutcome(i, t.task, t.kind, node.status, tool=t.tool, model=t.model, outputs=node.outputs,
                                  error=None if node.status == "refused" else node.error,
                                  note=node.error if node.status == "refused" else None, seconds=node.seconds)
    return outcomes, final


def report(results: list[dict[str, Any]], notes: list[str], refusal: str | None) -> str:
    """A plain answer without an LLM: what ran, what came out (text inline, media by ref), what did not."""
    lines: list[str] = []
    if refusal and not results:
        lines.append(f"I cannot do this: {refusal}")
    for r in results:
        head = f"- task {r.get('id')} ({r.get('task')}"
        head += f", {r['tool']})" if r.get("tool") else ")"
        status = r.get("status", "succeeded")
        if status not in ("succeeded", "cached"):
            why = r.get("error") or r.get("note")
            lines.append(f"{head}: {status}" + (f" - {why}" if why else ""))
            continue
        outs = []
        for o in r.get("outputs") or []:
            if o.get("text") is not None:
                t = str(o["text"])
                outs.append(f"\"{t[:500]}{'…' if len(t) > 500 else ''}\"")
            else:
                outs.append(f"[{o.get('modality')}: {o.get('id')}]")
        lines.append(f"{head}: " + ("; ".join(outs) if outs else "done"))
    if results:
        done = sum(r.get("status", "succeeded") in ("succeeded", "cached") for r in results)
        head = (f"I ran {len(results)} task(s) for your request:" if done == len(results)
                else f"{done} of {len(results)} task(s) for your request came through:")
        lines.insert(0, head)
    if notes:
        lines.append("Not done:" if results else "Notes:")
        lines += [f"- {n}" for n in notes]
    if not lines:
        lines.append("Nothing to do: the request asks for no tool.")
    return "\n".join(lines)
