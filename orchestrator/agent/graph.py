"""The agent: HuggingGPT's four stages as a LangGraph graph, and a chat runner with signal spans.

``plan -> validate -> (repair -> validate)* -> select -> execute -> respond``::

    agent = Agent()                                    # heuristic planner, default store and profile
    result = agent.run("Describe e1.jpg and read it aloud", inputs={"e1.jpg": "photos/e1.jpg"})
    result.answer, result.artifacts

* plan: the LLM gets the request, the chat context, the available tasks (from the
  registry, with their ports) and the user's media as named resources, and
  answers a HuggingGPT plan.
* validate / repair: :func:`~orchestrator.agent.plan.parse_plan` and
  :func:`~orchestrator.agent.plan.validate_plan`; on problems the LLM is asked
  to repair with the exact messages, ``max_repairs`` times; otherwise the answer
  is written without tools and says why.
* select: for each tool task, the active profile's candidates that are
  registered, can take the task's inputs, can be loaded and fit the memory
  budget (else the registry's tools for the task); the LLM chooses among several
  when ``choose_models_with_llm``.
* execute: tool tasks compile into one workflow per stage and run on the
  workflow engine (parallel, cached, with the engine's events); text-only tasks
  are answered by the LLM, between stages when tools need their text.
* respond: the LLM gets the results (text inline, media as refs, with a caption
  where a captioner exists) and writes the answer, streamed as ``answer_delta``.

Chat mode (:meth:`Agent.achat_stream`): the LLM streams a reply; each signal span
(``<image>…</image>``, ``<plan>[…]</plan>`` …) is dispatched the moment it closes,
as a small workflow on the same engine, while the reply keeps streaming. The
final message is the text with each span replaced by ``[kind: sha256:…]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypedDict

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import LLMError, OrchestratorError, PlanError, WorkflowError

from . import events as aev
from .llm import LLMClient, Message
from .memory import ChatMemory, ChatSession
from .plan import (
    BoundTask,
    Plan,
    Resource,
    TaskCatalog,
    ValidatedPlan,
    compile_plan,
    parse_plan,
    resource_modality,
    validate_plan,
)
from .prompts import load_prompt

__all__ = ["Agent", "AgentResult", "TaskOutcome", "build_graph", "results_json"]

logger = logging.getLogger("orchestrator.agent")


# ====================================================================== results
@dataclass
class TaskOutcome:
    """What became of one plan task."""

    id: int
    task: str
    kind: str  # tool | llm
    status: str  # succeeded | cached | failed | skipped | refused
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
class AgentResult:
    """The outcome of one request: the answer, the plan, what ran and every artifact produced.

    ``status``: ``succeeded`` (every task ran), ``partial`` (some failed or were
    skipped), ``failed`` (tasks were planned and none succeeded, or the LLM could not be
    reached to plan), ``no_tools`` (no plan
    was needed, or none could be made: ``problems`` says why).
    """

    answer: str
    status: str
    plan: Plan | None = None
    validated: ValidatedPlan | None = None
    tasks: dict[int, TaskOutcome] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    """The final ``run_finished`` / ``run_failed`` event of each workflow run."""
    artifacts: list[ArtifactRef] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    agent_run: str = ""
    session_id: str | None = None

    @property
    def outputs(self) -> dict[str, ArtifactRef]:
        """Every task output as ``t<id>_<port>`` -> ref."""
        return {f"t{t.id}_{port}": ref for t in self.tasks.values() for port, ref in t.outputs.items()}

    def artifact(self, modality: Modality | str) -> ArtifactRef | None:
        """The last artifact of a modality (``result.artifact("image")``)."""
        m = Modality(modality)
        return next((a for a in reversed(self.artifacts) if a.modality is m), None)


# ====================================================================== graph state
class AgentState(TypedDict, total=False):
    request: str
    resources: dict[str, Resource]
    history: list[Message]
    hints: list[str]
    plan_text: str
    plan: Plan | None
    vplan: ValidatedPlan | None
    problems: list[str]
    attempts: int
    notes: list[str]
    outcomes: dict[int, TaskOutcome]
    runs: list[Any]
    answer: str
    status: str


@dataclass
class _RunOptions:
    agent_run: str
    store: Any
    seed: int | None
    cache: bool
    cancel: threading.Event | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def _writer() -> Any:
    try:
        from langgraph.config import get_stream_writer

        return get_stream_writer()
    except Exception:  # noqa: BLE001 - outside a streaming run: events are dropped
        return lambda _event: None


# ====================================================================== the agent
class Agent:
    """The central LLM agent: plans, selects models, runs tools on the engine, answers; chats with spans.

    >>> agent = Agent()                                            # doctest: +SKIP
    >>> agent.run("Generate an image of a lighthouse at dusk").artifacts   # doctest: +SKIP
    [ArtifactRef(id='sha256:…', modality=<Modality.IMAGE: 'image'>, …)]

    ``llm``: an :class:`~orchestrator.agent.llm.LLMClient` or a spec for
    :func:`~orchestrator.agent.llm.make_llm` (default: the setting, else ``heuristic``).
    ``store``/``profile``/``registry``/``settings``: defaults are the configured ones.
    """

    def __init__(
        self,
        llm: LLMClient | str | None = None,
        store: Any = None,
        profile: Any = None,
        registry: Any = None,
        *,
        settings: Any = None,
        max_repairs: int = 2,
        choose_models_with_llm: bool = False,
        describe_media: bool | None = None,
        max_spans_per_message: int | None = None,
        memory_token_budget: int = 3000,
        cache: bool = True,
        seed: int | None = None,
        task_retries: int = 0,
        prompt_versions: Mapping[str, int] | None = None,
    ) -> None:
        from orchestrator.settings import get_settings

        from .llm import make_llm

        self.settings = settings or get_settings()
        if registry is None:
            from orchestrator.registry import default_registry

            registry = default_registry
        self.registry = registry
        self.llm = llm if isinstance(llm, LLMClient) else make_llm(llm, self.settings, registry=registry)
        if store is None:
            from orchestrator.artifacts import open_store

            store = open_store(self.settings)
        self.store = store
        self._profile = profile
        self.max_repairs = max_repairs
        self.choose_models_with_llm = choose_models_with_llm
        self.describe_media = (self.llm.name != "heuristic") if describe_media is None else describe_media
        self.max_spans_per_message = (self.settings.max_spans_per_message if max_spans_per_message is None
                                      else max_spans_per_message)
        self.cache = cache
        self.seed = seed
        self.task_retries = task_retries
        self.prompt_versions = dict(prompt_versions or {})
        self.memory = ChatMemory(store, token_budget=memory_token_budget)
        self._graph: Any = None

    def __repr__(self) -> str:
        return f"Agent(llm={self.llm!r}, store={self.store!r})"

    # ------------------------------------------------------------ shared pieces
    @property
    def profile(self) -> Any:
        """The active profile (``None`` when the model runtime is not installed)."""
        if self._profile is None or isinstance(self._profile, str):
            try:
                from orchestrator.runtime import get_profile
            except ImportError:
                return None
            self._profile = get_profile(self._profile, settings=self.settings)
        return self._profile

    def catalog(self) -> TaskCatalog:
        return TaskCatalog(self.registry)

    def warm(self) -> None:
        """Do the one-time work (imports, profile, model manager, registry scan) now, not at the
        first task or span. Chat turns call it before the reply starts streaming."""
        if getattr(self, "_warm", False):
            return
        import orchestrator.workflow  # noqa: F401 - the engine and LangGraph

        _ = self.profile, len(self.registry), self.graph
        try:
            from orchestrator.runtime import get_model_manager

            get_model_manager()
        except ImportError:
            pass
        self._warm = True

    def prompt(self, name: str) -> Any:
        return load_prompt(name, self.prompt_versions.get(name))

    @property
    def graph(self) -> Any:
        """The compiled LangGraph graph (built once)."""
        if self._graph is None:
            self._graph = build_graph(self)
        return self._graph

    # ------------------------------------------------------------ request mode
    def run(self, prompt: str, inputs: Mapping[str, Any] | None = None, session_id: str | None = None,
            **options: Any) -> AgentResult:
        """Plan, run and answer one request (blocking). See :meth:`astream` for the options."""
        coro = self.arun(prompt, inputs, session_id, **options)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with ThreadPoolExecutor(1) as pool:  # called from inside a running loop
            return pool.submit(asyncio.run, coro).result()

    async def arun(self, prompt: str, inputs: Mapping[str, Any] | None = None, session_id: str | None = None,
                   **options: Any) -> AgentResult:
        result: AgentResult | None = None
        async for ev in self.astream(prompt, inputs, session_id, **options):
            if isinstance(ev, aev.AgentFinished):
                result = ev.result
        assert result is not None
        return result

    async def astream(self, prompt: str, inputs: Mapping[str, Any] | None = None, session_id: str | None = None,
                      *, seed: int | None = None, cache: bool | None = None, agent_run: str | None = None,
                      cancel: threading.Event | None = None) -> AsyncIterator[Any]:
        """Run the graph and yield events: the engine's and the agent's (``plan_ready``,
        ``answer_delta`` …), ending with ``agent_finished`` whose ``result`` is the :class:`AgentResult`.

        ``inputs`` maps resource names (as the request names them: ``"e1.jpg"``) to
        images, arrays, paths, bytes, ``ArtifactRef``\\ s or artifact ids. With a
        ``session_id`` the exchange is remembered and the session's media are
        offered to the planner ("the previous image"). Setting ``cancel`` stops the
        running workflow and skips what has not started (status ``cancelled``).
        """
        run_id = agent_run or uuid.uuid4().hex
        opts = _RunOptions(agent_run=run_id, store=self.store, seed=self.seed if seed is None else seed,
                           cache=self.cache if cache is None else cache, cancel=cancel)
        resources = await asyncio.to_thread(self._store_inputs, inputs or {})
        history: list[Message] = []
        hints: list[str] = []
        session: ChatSession | None = None
        if session_id is not None:
            session = await asyncio.to_thread(self.memory.load, session_id)
            history = self.memory.context(session)
            for art in self.memory.media_resources(session):
                resources.setdefault(art.alias, Resource(art.alias, art.ref.modality, art.ref))
            for phrase, art in self.memory.resolve_references(session, prompt).items():
                hints.append(f'"{phrase}" is {art.alias}')
        state: AgentState = {"request": prompt, "resources": resources, "history": history, "hints": hints,
                             "attempts": 0, "notes": [], "problems": [], "outcomes": {}, "runs": []}
        collected: list[Any] = []
        final: dict[str, Any] = dict(state)
        config = {"configurable": {"agent_options": opts}, "recursion_limit": 50}
        async for mode, item in self.graph.astream(state, config, stream_mode=["custom", "values"]):
            if mode == "custom":
                collected.append(item)
                yield item
            else:
                final = item
        result = self._result(final, collected, run_id, session_id)
        if session is not None:
            await asyncio.to_thread(self._remember, session_id, prompt, resources, inputs or {}, result)
        done = aev.AgentFinished(agent_run=run_id, status=result.status, answer=result.answer, result=result)
        result.events.append(done)
        yield done

    def _result(self, state: Mapping[str, Any], events: list[Any], run_id: str, session_id: str | None) -> AgentResult:
        outcomes: dict[int, TaskOutcome] = state.get("outcomes") or {}
        artifacts: list[ArtifactRef] = []
        for t in sorted(outcomes.values(), key=lambda t: t.id):
            for ref in t.outputs.values():
                if ref.id not in {a.id for a in artifacts}:
                    artifacts.append(ref)
        return AgentResult(
            answer=state.get("answer", ""), status=state.get("status", "no_tools"), plan=state.get("plan"),
            validated=state.get("vplan"), tasks=outcomes, runs=list(state.get("runs") or []), artifacts=artifacts,
            events=list(events), notes=list(state.get("notes") or []), problems=list(state.get("problems") or []),
            agent_run=run_id, session_id=session_id,
        )

    def _store_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Resource]:
        from orchestrator.workflow import coerce_input

        out: dict[str, Resource] = {}
        for name, value in inputs.items():
            if isinstance(value, Resource):
                out[name] = value
                continue
            if isinstance(value, str) and value.startswith("sha256:"):
                ref = self.store.stat(value)
            elif isinstance(value, ArtifactRef):
                ref = self.store.stat(value)
            else:
                modality = resource_modality(str(value) if isinstance(value, str) else name, value) \
                    or resource_modality(name)
                if modality is None:
                    raise PlanError(f"cannot tell the modality of input {name!r}: name it with an extension "
                                    "(photo.png) or pass an ArtifactRef", resource=name)
                ref = coerce_input(value, modality, self.store)
            out[name] = Resource(name, ref.modality, ref)
        return out

    def _remember(self, session_id: str, prompt: str, resources: Mapping[str, Resource], inputs: Mapping[str, Any],
                  result: AgentResult) -> None:
        with self.memory.lock(session_id):
            session = self.memory.load(session_id)
            uploads = [r.value for n, r in resources.items() if n in inputs and isinstance(r.value, ArtifactRef)]
            self.memory.add_message(session, "user", prompt, uploads, origin="user upload")
            msg = self.memory.add_message(session, "assistant", result.answer, [], origin="")
            for t in sorted(result.tasks.values(), key=lambda t: t.id):
                for ref in t.outputs.values():
                    if ref.modality is not Modality.TEXT:
                        alias = self.memory.add_artifact(session, ref, origin=f"{t.task}", message=msg.n)
                        if alias not in msg.artifacts:
                            msg.artifacts.append(alias)
            self.memory.save(session)

    # ------------------------------------------------------------ stage helpers (used by the graph)
    def _resources_text(self, resources: Mapping[str, Resource]) -> str:
        if not resources:
            return "(none)"
        return "\n".join(f"- {name}: {r.modality.value}" for name, r in resources.items())

    def plan_messages(self, state: Mapping[str, Any]) -> list[Message]:
        catalog = self.catalog()
        system = self.prompt("planner").render(tasks=catalog.describe(),
                                               resources=self._resources_text(state.get("resources") or {}))
        user = state["request"]
        if state.get("hints"):
            user += "\n(" + "; ".join(state["hints"]) + ")"
        return [{"role": "system", "content": system}, *(state.get("history") or []), {"role": "user", "content": user}]

    def select_tool(self, task: BoundTask, request: str, catalog: TaskCatalog) -> tuple[str | None, str | None,
                                                                                            dict[str, Any], str | None]:
        """``(tool, model, inputs-rebound, why-not)`` for one tool task (see the module docstring)."""
        from .select import candidates_for

        cands, reasons = candidates_for(task, self.registry, self.profile, self.settings)
        if not cands:
            return None, None, {}, "; ".join(reasons) or f"no tool can run {task.task}"
        pick = 0
        if self.choose_models_with_llm and len(cands) > 1:
            pick = self._llm_choice(task, request, cands)
        tool, model, inputs = cands[pick]
        return tool, model, inputs, None

    def _llm_choice(self, task: BoundTask, request: str, cands: Sequence[tuple[str, str | None, Any]]) -> int:
        listing = "\n".join(f"{i}. tool {t}" + (f", model {m}" if m else "") for i, (t, m, _) in enumerate(cands))
        messages = [{"role": "system", "content": self.prompt("select").render(task=task.task, request=request,
                                                                               candidates=listing)},
                    {"role": "user", "content": "Choose."}]
        try:
            reply = self.llm.chat(messages, json=True, temperature=0.0,
                                  context={"stage": "select", "task": task.task, "candidates": listing})
            choice = int(reply.json().get("choice", 0))
        except (LLMError, ValueError, TypeError, AttributeError) as exc:
            logger.info("model choice by the LLM failed (%s); taking the first candidate", exc)
            return 0
        return choice if 0 <= choice < len(cands) else 0

    # ------------------------------------------------------------ execution
    async def execute_plan(self, vplan: ValidatedPlan, opts: _RunOptions, emit: Any) -> tuple[dict[int, TaskOutcome],
                                                                                               list[Any]]:
        """Run a selected plan: tool stages on the engine, text tasks on the LLM, in dependency order."""
        outcomes: dict[int, TaskOutcome] = {}
        done: dict[int, dict[str, ArtifactRef]] = {}
        runs: list[Any] = []
        for t in vplan.tasks.values():
            if t.kind == "tool" and t.tool is None:
                outcomes[t.id] = TaskOutcome(t.id, t.task, "tool", "failed", error=t.params.get("_why", "no tool"))
        while True:
            pending = [vplan.tasks[i] for i in vplan.order if i not in outcomes]
            if not pending:
                break
            if opts.cancelled:
                for t in pending:
                    outcomes[t.id] = TaskOutcome(t.id, t.task, t.kind, "cancelled", tool=t.tool, error="run cancelled")
                break
            # 1. tasks whose inputs failed are skipped
            progressed = False
            for t in pending:
                bad = [d for d in t.deps if d in outcomes and not outcomes[d].ok and outcomes[d].status != "refused"]
                if bad:
                    why = outcomes[bad[0]].error or outcomes[bad[0]].status
                    outcomes[t.id] = TaskOutcome(t.id, t.task, t.kind, "skipped", tool=t.tool,
                                                 error=f"task {bad[0]} ({vplan.tasks[bad[0]].task}) {outcomes[bad[0]].status}: {why}")
                    progressed = True
            if progressed:
                continue
            # 2. every tool task whose inputs are ready or come from this stage: one workflow
            stage: list[int] = []
            for t in pending:
                if t.kind == "tool" and all(d in done or d in stage for d in t.deps):
                    stage.append(t.id)
            text_ready = [t for t in pending if t.kind == "llm" and all(d in done for d in t.deps)]
            if not stage and not text_ready:
                for t in pending:
                    outcomes[t.id] = TaskOutcome(t.id, t.task, t.kind, "skipped", error="its inputs never became available")
                break
            jobs = []
            if stage:
                jobs.append(self._run_stage(vplan, stage, done, opts, emit))
            jobs += [self._run_text_task(vplan, t, done, opts, emit) for t in text_ready]
            for res in await asyncio.gather(*jobs):
                stage_outcomes, run = res
                outcomes.update(stage_outcomes)
                for tid, o in stage_outcomes.items():
                    if o.ok or o.status == "refused":
                        done[tid] = dict(o.outputs)
                if run is not None:
                    runs.append(run)
        return outcomes, runs

    async def _run_stage(self, vplan: ValidatedPlan, ids: list[int], done: Mapping[int, Mapping[str, ArtifactRef]],
                         opts: _RunOptions, emit: Any) -> tuple[dict[int, TaskOutcome], Any]:
        compiled_plan = compile_plan(vplan, task_ids=ids, done=done, name=f"agent-{opts.agent_run[:8]}",
                                     retries=self.task_retries)
        outcomes: dict[int, TaskOutcome] = {}
        try:
            compiled = compiled_plan.workflow.compile(registry=self.registry, settings=self.settings)
        except WorkflowError as exc:
            for i in ids:
                outcomes[i] = TaskOutcome(i, vplan.tasks[i].task, "tool", "failed", tool=vplan.tasks[i].tool,
                                          error=f"the workflow is invalid: {exc}")
            return outcomes, None
        extra = {"cancel": opts.cancel} if opts.cancel is not None else {}
        nodes, final = await _run_workflow(compiled, compiled_plan.run_inputs, emit, store=opts.store,
                                           cache=opts.cache, seed=opts.seed, profile=self.profile, **extra)
        for i in ids:
            t = vplan.tasks[i]
            status, outputs, error, seconds = nodes.get(compiled_plan.node_of_task[i], ("skipped", {}, None, 0.0))
            if error is None and status == "skipped":
                error = (getattr(final, "errors", None) or {}).get("<run>", "did not run")
            outcomes[i] = TaskOutcome(i, t.task, "tool", status, tool=t.tool, model=t.model, outputs=outputs,
                                      error=error, seconds=seconds)
        return outcomes, final

    async def _run_text_task(self, vplan: ValidatedPlan, t: BoundTask, done: Mapping[int, Mapping[str, ArtifactRef]],
                             opts: _RunOptions, emit: Any) -> tuple[dict[int, TaskOutcome], None]:
        started = time.perf_counter()
        try:
            text = await asyncio.to_thread(self._text_input, vplan, t, done)
        except OrchestratorError as exc:
            outcome = TaskOutcome(t.id, t.task, "llm", "failed", error=str(exc))
            emit(aev.TextTaskFinished(agent_run=opts.agent_run, task_id=t.id, task=t.task, status="failed",
                                      note=str(exc)))
            return {t.id: outcome}, None
        desc = self.catalog().tasks.get(t.task)
        extra = {k: v for k, v in t.args.items() if k != "text" and isinstance(v, str)}
        user = text if not extra else "\n".join(f"{k}: {v}" for k, v in extra.items()) + "\n\n" + text
        messages = [{"role": "system", "content": self.prompt("text_task").render(
            task=t.task, description=desc.description if desc else "")}, {"role": "user", "content": user}]
        try:
            reply = await self.llm.achat(messages, temperature=0.0,
                                         context={"stage": "text_task", "task": t.task, "text": text, "args": extra})
        except LLMError as exc:
            outcome = TaskOutcome(t.id, t.task, "llm", "failed", error=str(exc), seconds=time.perf_counter() - started)
            emit(aev.TextTaskFinished(agent_run=opts.agent_run, task_id=t.id, task=t.task, status="failed",
                                      note=str(exc)))
            return {t.id: outcome}, None
        if reply.finish_reason == "refused":
            # pass the input through so later tasks still run, and say so
            ref = await asyncio.to_thread(opts.store.put, text, modality=Modality.TEXT)
            outcome = TaskOutcome(t.id, t.task, "llm", "refused", tool="llm", outputs={"text": ref}, note=reply.text,
                                  seconds=time.perf_counter() - started)
        else:
            ref = await asyncio.to_thread(opts.store.put, reply.text.strip(), modality=Modality.TEXT,
                                          provenance={"tool": f"llm:{self.llm.name}", "node": f"t{t.id}"})
            outcome = TaskOutcome(t.id, t.task, "llm", "succeeded", tool="llm", model=getattr(self.llm, "model", None),
                                  outputs={"text": ref}, seconds=time.perf_counter() - started)
        emit(aev.TextTaskFinished(agent_run=opts.agent_run, task_id=t.id, task=t.task, status=outcome.status,
                                  output=outcome.outputs.get("text"), note=outcome.note))
        return {t.id: outcome}, None

    def _text_input(self, vplan: ValidatedPlan, t: BoundTask, done: Mapping[int, Mapping[str, ArtifactRef]]) -> str:
        parts = []
        for bindings in t.inputs.values():
            for b in bindings:
                if b.kind == "literal":
                    parts.append(b.value)
                elif b.kind == "generated":
                    parts.append(str(self.store.load(done[b.task][b.value])))  # type: ignore[index]
                else:
                    res = vplan.resources[b.value]
                    parts.append(str(self.store.load(res.value)) if res.value is not None else b.value)
        return "\n\n".join(parts)

    async def describe(self, outcomes: Mapping[int, TaskOutcome], vplan: ValidatedPlan, opts: _RunOptions,
                       emit: Any) -> dict[str, str]:
        """Captions of the final images (and descriptions of videos), where such a tool is registered."""
        from orchestrator.workflow import Workflow

        used = {b.task for t in vplan.tasks.values() for bs in t.inputs.values() for b in bs if b.kind == "generated"}
        finals = [ref for o in outcomes.values() if o.ok and o.id not in used for ref in o.outputs.values()
                  if ref.modality in (Modality.IMAGE, Modality.VIDEO)]
        by_task = {Modality.IMAGE: "image-to-text", Modality.VIDEO: "video-to-text"}
        wf = Workflow(f"describe-{opts.agent_run[:8]}")
        run_inputs: dict[str, Any] = {}
        names: dict[str, str] = {}
        for i, ref in enumerate(finals[:6]):
            tools = self.registry.find(task=by_task[ref.modality])
            tool = next((x for x in tools if sum(1 for p in x.spec.inputs if not p.optional) == 1), None)
            if tool is None:
                continue
            port = next(p for p in tool.spec.inputs if not p.optional)
            out = next((p for p in tool.spec.outputs if p.modality is Modality.TEXT), None)
            if out is None or port.modality is not ref.modality:
                continue
            wf.add_input(f"m{i}", ref.modality).add_node(f"d{i}", tool.name, inputs={port.name: f"m{i}"})
            wf.add_output(f"d{i}", f"d{i}.{out.name}")
            run_inputs[f"m{i}"] = ref
            names[f"d{i}"] = ref.id
        if not names:
            return {}
        try:
            compiled = wf.compile(registry=self.registry, settings=self.settings)
            _, final = await _run_workflow(compiled, run_inputs, emit, store=opts.store, cache=opts.cache,
                                           profile=self.profile)
            captions: dict[str, str] = {}
            for name, ref in (getattr(final, "outputs", None) or {}).items():
                captions[names[name]] = str(await opts.store.aload(ref))
            return captions
        except OrchestratorError as exc:
            logger.info("could not describe the produced media: %s", exc)
            return {}

    def respond_messages(self, state: Mapping[str, Any], results: list[dict[str, Any]]) -> list[Message]:
        lines = []
        for r in results:
            line = f"- task {r['id']} {r['task']}"
            if r.get("tool"):
                line += f" (tool {r['tool']}" + (f", model {r['model']}" if r.get("model") else "") + ")"
            line += f": {r['status']}"
            if r.get("error"):
                line += f" - {r['error']}"
            for o in r.get("outputs", []):
                if o.get("text") is not None:
                    line += f"\n  text: {o['text']}"
                else:
                    line += f"\n  [{o['modality']}: {o['id']}]" + (f" (shows: {o['caption']})" if o.get("caption") else "")
            if r.get("note"):
                line += f"\n  note: {r['note']}"
            lines.append(line)
        notes = list(state.get("notes") or [])
        body = f"Request: {state['request']}\n\nResults:\n" + ("\n".join(lines) if lines else "(no tools were run)")
        if notes:
            body += "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes)
        return [{"role": "system", "content": self.prompt("respond").render()}, *(state.get("history") or []),
                {"role": "user", "content": body}]

    # ------------------------------------------------------------ chat mode
    def chat(self, session_id: str, message: str, media: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Send one chat message (blocking); returns the final :class:`~orchestrator.agent.events.ChatDone`."""

        async def go() -> Any:
            last = None
            async for ev in self.achat_stream(session_id, message, media, **options):
                last = ev
            return last

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(go())
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    async def achat_stream(self, session_id: str, message: str, media: Mapping[str, Any] | None = None, *,
                           seed: int | None = None, cancel: threading.Event | None = None) -> AsyncIterator[Any]:
        """Stream a chat reply: ``answer_delta`` text, span dispatch/finish events, the engine's events
        of each span's workflow, and finally ``chat_done`` with the message as stored in the session.
        Setting ``cancel`` stops the reply and the spans' workflows."""
        from .chat import ChatRunner

        runner = ChatRunner(self, session_id, seed=self.seed if seed is None else seed, cancel=cancel)
        async for ev in runner.run(message, media or {}):
            yield ev


async def _run_workflow(compiled: Any, inputs: dict[str, Any], emit: Any, **options: Any) -> tuple[
        dict[str, tuple[str, dict[str, ArtifactRef], str | None, float]], Any]:
    """Run on the engine, forwarding its events; returns each node's (status, outputs, error, seconds)
    as the events told it, and the final ``run_finished`` / ``run_failed`` event."""
    nodes: dict[str, tuple[str, dict[str, ArtifactRef], str | None, float]] = {}
    final = None
    async for ev in compiled.astream(inputs, **options):
        emit(ev)
        kind = getattr(ev, "type", "")
        if kind == "node_finished":
            nodes[ev.node] = ("succeeded", dict(ev.outputs), None, ev.seconds)
        elif kind == "node_cached":
            nodes[ev.node] = ("cached", dict(ev.outputs), None, 0.0)
        elif kind == "node_failed":
            nodes[ev.node] = ("failed", {}, str(ev.error.get("message") or ev.error), 0.0)
        elif kind == "node_skipped":
            nodes[ev.node] = ("cancelled" if ev.reason == "run cancelled" else "skipped", {}, ev.reason, 0.0)
        elif kind in ("run_finished", "run_failed"):
            final = ev
    return nodes, final


# ====================================================================== the graph
def build_graph(agent: Agent) -> Any:
    """The LangGraph ``StateGraph`` of the four stages, compiled."""
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END, START, StateGraph

    async def plan_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: _RunOptions = config["configurable"]["agent_options"]
        messages = agent.plan_messages(state)
        ctx = {"stage": "plan", "request": _resolved(state), "resources": state.get("resources") or {},
               "catalog": agent.catalog()}
        try:
            reply = await agent.llm.achat(messages, temperature=0.0, context=ctx)
        except LLMError as exc:
            return {"plan_text": "", "problems": [f"the LLM could not plan: {exc}"], "attempts": 99,
                    "notes": [f"the LLM is unavailable: {exc}"]}
        del opts
        return {"plan_text": reply.text}

    async def validate_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: _RunOptions = config["configurable"]["agent_options"]
        emit = _writer()
        if state.get("attempts", 0) >= 99:
            return {"plan": None, "vplan": None}
        try:
            plan = parse_plan(state.get("plan_text", ""))
        except PlanError as exc:
            return {"plan": None, "vplan": None, "problems": [f"the answer is not a plan: {exc.message}"]}
        vplan, problems = validate_plan(plan, agent.catalog(), state.get("resources") or {},
                                        max_tasks=agent.settings.max_plan_tasks)
        if vplan is None:
            return {"plan": plan, "vplan": None, "problems": problems}
        emit(aev.PlanReady(agent_run=opts.agent_run, plan=plan.to_hugginggpt(), attempt=state.get("attempts", 0),
                           notes=plan.notes, warnings=vplan.warnings))
        return {"plan": plan, "vplan": vplan, "problems": [], "notes": list(state.get("notes") or []) + plan.notes}

    def after_validate(state: AgentState) -> str:
        if state.get("vplan") is not None:
            return "select"
        if state.get("attempts", 0) < agent.max_repairs:
            return "repair"
        return "respond"

    async def repair_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: _RunOptions = config["configurable"]["agent_options"]
        emit = _writer()
        attempt = state.get("attempts", 0) + 1
        problems = state.get("problems") or []
        emit(aev.PlanRepaired(agent_run=opts.agent_run, problems=problems, attempt=attempt))
        messages = agent.plan_messages(state) + [
            {"role": "assistant", "content": state.get("plan_text", "")},
            {"role": "user", "content": agent.prompt("repair").render(problems="\n".join(f"- {p}" for p in problems))},
        ]
        ctx = {"stage": "repair", "request": _resolved(state), "plan": state.get("plan_text", ""),
               "problems": problems, "resources": state.get("resources") or {}, "catalog": agent.catalog()}
        try:
            reply = await agent.llm.achat(messages, temperature=0.0, context=ctx)
        except LLMError as exc:
            return {"attempts": 99, "problems": problems + [f"the LLM could not repair the plan: {exc}"]}
        return {"plan_text": reply.text, "attempts": attempt}

    async def select_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: _RunOptions = config["configurable"]["agent_options"]
        emit = _writer()
        vplan = state["vplan"]
        assert vplan is not None
        catalog = agent.catalog()
        selections: dict[str, dict[str, Any]] = {}
        for t in vplan.tool_tasks:
            tool, model, inputs, why = await asyncio.to_thread(agent.select_tool, t, state["request"], catalog)
            if tool is None:
                t.tool, t.params = None, {"_why": why}
                selections[str(t.id)] = {"task": t.task, "tool": None, "error": why}
                continue
            t.tool, t.model, t.inputs = tool, model, inputs
            if model is not None and "model" in agent.registry.get(tool).spec.params.model_fields:
                t.params["model"] = model
            selections[str(t.id)] = {"task": t.task, "tool": tool, "model": model}
        if selections:
            emit(aev.ModelsSelected(agent_run=opts.agent_run, selections=selections))
        return {"vplan": vplan}

    async def execute_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: _RunOptions = config["configurable"]["agent_options"]
        emit = _writer()
        vplan = state["vplan"]
        assert vplan is not None
        outcomes, runs = await agent.execute_plan(vplan, opts, emit)
        return {"outcomes": outcomes, "runs": runs}

    async def respond_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: _RunOptions = config["configurable"]["agent_options"]
        emit = _writer()
        vplan = state.get("vplan")
        outcomes: dict[int, TaskOutcome] = state.get("outcomes") or {}
        notes = list(state.get("notes") or [])
        problems = list(state.get("problems") or [])
        plan = state.get("plan")
        if vplan is None and problems:
            emit(aev.PlanRejected(agent_run=opts.agent_run, problems=problems))
            notes.append("no tools were used because the plan could not be made valid: " + "; ".join(problems))
        captions: dict[str, str] = {}
        if vplan is not None and agent.describe_media and outcomes:
            captions = await agent.describe(outcomes, vplan, opts, emit)
        results = []
        for t in sorted(outcomes.values(), key=lambda t: t.id):
            outs = []
            for port, ref in t.outputs.items():
                if ref.modality is Modality.TEXT:
                    text = str(await opts.store.aload(ref))
                    outs.append({"port": port, "modality": "text", "id": ref.id, "text": text[:4000]})
                else:
                    outs.append({"port": port, "modality": ref.modality.value, "id": ref.id,
                                 "caption": captions.get(ref.id)})
            results.append({"id": t.id, "task": t.task, "tool": t.tool, "model": t.model, "status": t.status,
                            "error": t.error, "note": t.note, "outputs": outs})
        for t in sorted(outcomes.values(), key=lambda t: t.id):
            if t.status == "refused" and t.note:
                notes.append(f"task {t.id} ({t.task}) not done: {t.note}")
        state2 = {**state, "notes": notes}
        messages = agent.respond_messages(state2, results)
        ctx = {"stage": "respond", "request": state["request"], "results": results, "notes": notes,
               "refusal": plan.refusal if plan is not None else None}
        pieces: list[str] = []
        from .heuristic import HeuristicPlanner

        if opts.cancelled:
            answer = "Cancelled.\n" + HeuristicPlanner(agent.registry).respond(ctx)
        else:
            try:
                async for piece in agent.llm.achat(messages, stream=True, context=ctx):
                    pieces.append(piece)
                    emit(aev.AnswerDelta(agent_run=opts.agent_run, text=piece))
                answer = "".join(pieces).strip()
            except LLMError as exc:
                answer = HeuristicPlanner(agent.registry).respond(ctx) + f"\n(The LLM could not write the answer: {exc})"
        llm_down = any(p.startswith("the LLM could not") for p in state.get("problems") or [])
        if opts.cancelled:
            status = "cancelled"
        elif not outcomes and llm_down:
            status = "failed"  # no plan because the LLM could not be reached: not a success
        elif not outcomes:
            status = "no_tools"
        elif all(t.ok for t in outcomes.values()):
            status = "succeeded"
        elif any(t.ok or t.status == "refused" for t in outcomes.values()):
            status = "partial"
        else:
            status = "failed"
        artifacts = [ref for t in sorted(outcomes.values(), key=lambda t: t.id) for ref in t.outputs.values()]
        emit(aev.AnswerReady(agent_run=opts.agent_run, text=answer, artifacts=artifacts))
        return {"answer": answer, "status": status, "notes": notes}

    graph = StateGraph(AgentState)
    graph.add_node("plan", plan_node)
    graph.add_node("validate", validate_node)
    graph.add_node("repair", repair_node)
    graph.add_node("select", select_node)
    graph.add_node("execute", execute_node)
    graph.add_node("respond", respond_node)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "validate")
    graph.add_conditional_edges("validate", after_validate, {"select": "select", "repair": "repair", "respond": "respond"})
    graph.add_edge("repair", "validate")
    graph.add_edge("select", "execute")
    graph.add_edge("execute", "respond")
    graph.add_edge("respond", END)
    return graph.compile()


def _resolved(state: Mapping[str, Any]) -> str:
    """The request with "the previous image" replaced by the session alias it resolved to."""
    text = state["request"]
    for hint in state.get("hints") or []:
        phrase, _, alias = hint.rpartition(" is ")
        text = text.replace(phrase.strip('"'), alias)
    return text


def results_json(result: AgentResult) -> str:
    """A compact JSON view of a result (for logs and the CLI)."""
    return json.dumps({
        "status": result.status, "answer": result.answer,
        "tasks": {i: {"task": t.task, "status": t.status, "tool": t.tool, "error": t.error}
                  for i, t in result.tasks.items()},
        "artifacts": [a.id for a in result.artifacts],
    }, indent=2)

