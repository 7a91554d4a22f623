"""The agent: HuggingGPT's four stages as a LangGraph graph, and a chat runner with signal spans.

``plan -> validate -> (repair -> validate)* -> select -> execute -> respond``::

    agent = Agent()                                    # offline planner, default store and profile
    result = agent.run("Describe e1.jpg and read it aloud", inputs={"e1.jpg": "photos/e1.jpg"})
    result.answer, result.artifacts

* plan: the planner (:class:`~orchestrator.agent.planner.Planner`: the LLM planner,
  or the offline one) gets the request, the catalog of tasks, the user's media as
  named resources and the chat context, and returns a HuggingGPT plan or a refusal.
* validate / repair: :func:`~orchestrator.agent.plan.validate_plan` finds typed
  problems; the planner repairs with them, ``max_repairs`` times; otherwise the
  answer is written without tools and says why.
* select: for each task, the active profile's candidates that are registered, can
  take the task's inputs, can be loaded and fit the memory budget (else the
  registry's tools for the task); the LLM chooses among several when
  ``choose_models_with_llm``.
* execute: the whole plan, text tasks included (tools that ask the LLM), compiles
  into one workflow and runs on the engine (:mod:`orchestrator.agent._execute`).
* respond: the LLM gets the results (text inline, media as refs, with a caption
  where a captioner exists) and writes the answer, streamed as ``answer_delta``;
  with no LLM the answer is a plain report.

Outcomes (``AgentResult.status``): ``succeeded``, ``partial`` (some tasks failed,
were skipped or refused), ``refused`` (nothing of the request can be done here: the
planner refused, or every task was refused), ``failed``, ``cancelled``,
``no_tools`` (the request needed no tool; the LLM answered).

Chat mode (:meth:`Agent.achat_stream`): the LLM streams a reply; each signal span
(``<image>…</image>``, ``<plan>[…]</plan>`` …) is dispatched the moment it closes,
as a workflow on the same engine, while the reply keeps streaming.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import LLMError, OrchestratorError, PlanError
from orchestrator.workflow.events import RunFinished

from . import events as aev
from ._execute import RunOptions, TaskOutcome, execute_plan, report, run_workflow
from ._factory import make_planner
from .chat import ChatRunner
from .llm import LLMClient, Message, make_llm
from .llm_planner import LLMPlanner
from .memory import ChatMemory, ChatSession
from .plan import BoundTask, Plan, PlanProblem, Resource, TaskCatalog, ValidatedPlan, resource_modality, validate_plan
from .planner import Planner, PlanRequest
from .prompts import Prompt, load_prompt
from .select import candidates_for

__all__ = ["Agent", "AgentResult", "AgentStatus", "TaskOutcome", "build_graph", "results_json"]

logger = logging.getLogger("orchestrator.agent")

T = TypeVar("T")
AgentStatus = Literal["succeeded", "partial", "refused", "failed", "cancelled", "no_tools"]


# ====================================================================== results
@dataclass
class AgentResult:
    """The outcome of one request: the answer, the plan, what ran and every artifact produced.

    ``status``: see the module docstring. ``refusals`` lists what was not done
    because the planner or a tool declined it (with the reason).
    """

    answer: str
    status: AgentStatus
    plan: Plan | None = None
    validated: ValidatedPlan | None = None
    tasks: dict[int, TaskOutcome] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    """The final ``run_finished`` / ``run_failed`` event of the plan's workflow run."""
    artifacts: list[ArtifactRef] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[PlanProblem] = field(default_factory=list)
    agent_run: str = ""
    session_id: str | None = None

    @property
    def outputs(self) -> dict[str, ArtifactRef]:
        """Every task output as ``t<id>_<port>`` -> ref (cached tasks included)."""
        return {f"t{t.id}_{port}": ref for t in self.tasks.values() for port, ref in t.outputs.items()}

    @property
    def refusals(self) -> list[str]:
        """What was refused and why: the planner's refusal, then each refused task."""
        out = [self.plan.refusal] if self.plan is not None and self.plan.refusal else []
        return out + [f"task {t.id} ({t.task}): {t.note}" for t in self.tasks.values() if t.status == "refused"]

    def artifact(self, modality: Modality | str) -> ArtifactRef | None:
        """The last artifact of a modality (``result.artifact("image")``)."""
        m = Modality(modality)
        return next((a for a in reversed(self.artifacts) if a.modality is m), None)


def outcome_status(outcomes: Mapping[int, TaskOutcome], plan: Plan | None, *, cancelled: bool,
                   llm_down: bool) -> AgentStatus:
    """The status of a request from its task outcomes (see the module docstring)."""
    if cancelled:
        return "cancelled"
    if not outcomes:
        if llm_down:
            return "failed"  # no plan because the LLM could not be reached: not a success
        return "refused" if plan is not None and plan.refusal else "no_tools"
    if all(t.ok for t in outcomes.values()):
        return "partial" if plan is not None and plan.refusal else "succeeded"
    if any(t.ok for t in outcomes.values()):
        return "partial"
    if all(t.status in ("refused", "skipped") for t in outcomes.values()) and any(
            t.status == "refused" for t in outcomes.values()):
        return "refused"
    return "failed"


# ====================================================================== graph state
class AgentState(TypedDict, total=False):
    request: str
    resources: dict[str, Resource]
    history: list[Message]
    plan: Plan | None
    vplan: ValidatedPlan | None
    problems: list[PlanProblem]
    llm_down: bool
    attempts: int
    notes: list[str]
    outcomes: dict[int, TaskOutcome]
    runs: list[Any]
    answer: str
    status: AgentStatus


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
    :func:`~orchestrator.agent.llm.make_llm` (default: the setting; ``offline``: no
    LLM). ``planner``: default the LLM planner on that client, or the offline planner
    when there is none. ``store``/``profile``/``registry``/``settings``: defaults are
    the configured ones.
    """

    def __init__(
        self,
        llm: LLMClient | str | None = None,
        store: Any = None,
        profile: Any = None,
        registry: Any = None,
        *,
        planner: Planner | None = None,
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

        self.settings = settings or get_settings()
        if registry is None:
            from orchestrator.registry import default_registry

            registry = default_registry
        self.registry = registry
        self.prompt_versions = dict(prompt_versions or {})
        self.llm: LLMClient | None = llm if isinstance(llm, LLMClient) else make_llm(llm, self.settings)
        if planner is None:
            planner = (LLMPlanner(self.llm, prompt_versions=self.prompt_versions) if self.llm is not None
                       else make_planner("offline", self.settings, registry=registry))
        self.planner: Planner = planner
        if store is None:
            from orchestrator.artifacts import open_store

            store = open_store(self.settings)
        self.store = store
        self._profile = profile
        self.max_repairs = max_repairs
        self.choose_models_with_llm = choose_models_with_llm
        self.describe_media = (self.llm is not None) if describe_media is None else describe_media
        self.max_spans_per_message = (self.settings.max_spans_per_message if max_spans_per_message is None
                                      else max_spans_per_message)
        self.cache = cache
        self.seed = seed
        self.task_retries = task_retries
        self.memory = ChatMemory(store, token_budget=memory_token_budget)
        self._graph: Any = None
        self._warm = False

    def __repr__(self) -> str:
        return f"Agent(planner={self.planner!r}, llm={self.llm!r}, store={self.store!r})"

    @property
    def llm_label(self) -> str:
        """Which LLM answers text tasks (part of their cache key): ``offline`` or ``name:model@url``."""
        if self.llm is None:
            return "offline"
        model = getattr(self.llm, "model", None) or getattr(self.llm, "model_id", None) or ""
        base = getattr(self.llm, "base_url", None)
        return f"{self.llm.name}:{model}" + (f"@{base}" if base else "")

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
        if self._warm:
            return
        import orchestrator.workflow  # noqa: F401 - the engine and LangGraph

        _ = self.profile, len(self.registry), self.graph
        try:
            from orchestrator.runtime import get_model_manager

            get_model_manager()
        except ImportError:
            pass
        self._warm = True

    def prompt(self, name: str) -> Prompt:
        return load_prompt(name, self.prompt_versions.get(name))

    @property
    def graph(self) -> Any:
        """The compiled LangGraph graph (built once)."""
        if self._graph is None:
            self._graph = build_graph(self)
        return self._graph

    def run_options(self, agent_run: str, *, seed: int | None = None, cache: bool | None = None,
                    cancel: threading.Event | None = None) -> RunOptions:
        """The options of one run: its LLM client is bounded by the run's LLM deadline."""
        deadline = time.monotonic() + self.settings.llm_run_deadline_seconds
        return RunOptions(agent_run=agent_run, store=self.store, seed=self.seed if seed is None else seed,
                          cache=self.cache if cache is None else cache, cancel=cancel,
                          llm=self.llm.bounded(deadline) if self.llm is not None else None,
                          llm_label=self.llm_label, deadline=deadline)

    # ------------------------------------------------------------ request mode
    def run(self, prompt: str, inputs: Mapping[str, Any] | None = None, session_id: str | None = None,
            **options: Any) -> AgentResult:
        """Plan, run and answer one request (blocking). See :meth:`astream` for the options."""
        return self._blocking(self.arun(prompt, inputs, session_id, **options))

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on a loop of its own (a worker thread's when one runs here); the LLM client's
        connections of that loop are closed before it ends."""
        async def run_and_close() -> T:
            try:
                return await coro
            finally:
                if self.llm is not None:
                    await self.llm.release()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run_and_close())
        with ThreadPoolExecutor(1) as pool:  # called from inside a running loop
            return pool.submit(asyncio.run, run_and_close()).result()

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
        opts = self.run_options(run_id, seed=seed, cache=cache, cancel=cancel)
        resources = await asyncio.to_thread(self._store_inputs, inputs or {})
        history: list[Message] = []
        request = prompt
        session: ChatSession | None = None
        if session_id is not None:
            session = await asyncio.to_thread(self.memory.load, session_id)
            history = self.memory.context(session)
            for art in self.memory.media_resources(session):
                resources.setdefault(art.alias, Resource(art.alias, art.ref.modality, art.ref))
            for phrase, art in self.memory.resolve_references(session, prompt).items():
                request = request.replace(phrase, art.alias)
        state: AgentState = {"request": request, "resources": resources, "history": history, "attempts": 0,
                             "notes": [], "problems": [], "outcomes": {}, "runs": [], "llm_down": False}
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
        done = aev.AgentFinished(agent_run=run_id, status=result.status, answer=result.answer,
                                 refusals=result.refusals, result=result)
        result.events.append(done)
        yield done

    async def aplan(self, prompt: str, inputs: Mapping[str, Any] | None = None) -> tuple[Plan, ValidatedPlan | None,
                                                                                           list[PlanProblem]]:
        """Plan, validate and repair without running anything (``orchestrator plan``)."""
        resources = await asyncio.to_thread(self._store_inputs, inputs or {})
        opts = self.run_options(uuid.uuid4().hex)
        request = self.plan_request(prompt, resources, [], opts)
        plan = await self.planner.plan(request)
        catalog = request.catalog
        for attempt in range(self.max_repairs + 1):
            problems = _unreadable(plan) or ([] if plan.refusal and not plan.tasks else None)
            if problems is None:
                vplan, problems = validate_plan(plan, catalog, resources)
                if vplan is not None:
                    await asyncio.to_thread(self.select, vplan, prompt)
                    return plan, vplan, []
            if not problems or attempt == self.max_repairs:
                return plan, None, problems
            plan = await self.planner.repair(request, plan, problems)
        return plan, None, []

    def plan_request(self, text: str, resources: Mapping[str, Resource], history: Sequence[Message],
                     opts: RunOptions) -> PlanRequest:
        return PlanRequest(text=text, catalog=self.catalog(), resources={n: r.modality for n, r in resources.items()},
                           history=[f"{m['role']}: {m.get('content') or ''}" for m in history],
                           deadline=opts.deadline)

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

    # ------------------------------------------------------------ select
    def select(self, vplan: ValidatedPlan, request: str, llm: LLMClient | None = None) -> dict[str, dict[str, Any]]:
        """Give each task of ``vplan`` its tool and model (see the module docstring); returns the choices.
        ``llm`` (the run's, bounded by its deadline) chooses among candidates when ``choose_models_with_llm``."""
        catalog = self.catalog()
        selections: dict[str, dict[str, Any]] = {}
        for i in vplan.order:
            t = vplan.tasks[i]
            tool, model, inputs, why = self.select_tool(t, request, catalog, llm or self.llm)
            if tool is None:
                t.tool, t.unavailable = None, why
                selections[str(t.id)] = {"task": t.task, "tool": None, "error": why}
                continue
            t.tool, t.model, t.inputs = tool, model, inputs
            if model is not None and "model" in self.registry.get(tool).spec.params.model_fields:
                t.params["model"] = model
            selections[str(t.id)] = {"task": t.task, "tool": tool, "model": model}
        return selections

    def select_tool(self, task: BoundTask, request: str, catalog: TaskCatalog, llm: LLMClient | None = None
                    ) -> tuple[str | None, str | None, dict[str, Any], str | None]:
        """``(tool, model, inputs-rebound, why-not)`` for one task."""
        cands, reasons = candidates_for(task, self.registry, self.profile, self.settings)
        if not cands:
            return None, None, {}, "; ".join(reasons) or f"no tool can run {task.task}"
        pick = 0
        if self.choose_models_with_llm and len(cands) > 1 and llm is not None:
            pick = self._llm_choice(task, request, cands, llm)
        tool, model, inputs = cands[pick]
        return tool, model, inputs, None

    def _llm_choice(self, task: BoundTask, request: str, cands: Sequence[tuple[str, str | None, Any]],
                    llm: LLMClient) -> int:
        listing = "\n".join(f"{i}. tool {t}" + (f", model {m}" if m else "") for i, (t, m, _) in enumerate(cands))
        messages = [{"role": "system", "content": self.prompt("select").render(task=task.task, request=request,
                                                                               candidates=listing)},
                    {"role": "user", "content": "Choose."}]
        try:
            reply = llm.chat(messages, json=True, temperature=0.0)
            choice = int(reply.json().get("choice", 0))
        except (LLMError, ValueError, TypeError, AttributeError) as exc:
            logger.info("model choice by the LLM failed (%s); taking the first candidate", exc)
            return 0
        return choice if 0 <= choice < len(cands) else 0

    # ------------------------------------------------------------ respond
    async def describe(self, outcomes: Mapping[int, TaskOutcome], vplan: ValidatedPlan, opts: RunOptions,
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
            _, final = await run_workflow(compiled, run_inputs, emit, store=opts.store, cache=opts.cache,
                                          profile=self.profile)
            captions: dict[str, str] = {}
            for name, ref in (final.outputs if isinstance(final, RunFinished) else {}).items():
                if isinstance(ref, ArtifactRef):  # each d<i> is one caption
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

        return self._blocking(go())

    async def achat_stream(self, session_id: str, message: str, media: Mapping[str, Any] | None = None, *,
                           seed: int | None = None, cancel: threading.Event | None = None) -> AsyncIterator[Any]:
        """Stream a chat reply: ``answer_delta`` text, span dispatch/finish events, the engine's events
        of each span's workflow, and finally ``chat_done`` with the message as stored in the session.
        Setting ``cancel`` stops the reply and the spans' workflows."""
        runner = ChatRunner(self, session_id, seed=self.seed if seed is None else seed, cancel=cancel)
        async for ev in runner.run(message, media or {}):
            yield ev


def _unreadable(plan: Plan) -> list[PlanProblem] | None:
    """The problem of an answer that held no plan at all (None: it held one)."""
    return [PlanProblem(f"the answer is not a plan: {plan.unreadable}")] if plan.unreadable is not None else None


# ====================================================================== the graph
def build_graph(agent: Agent) -> Any:
    """The LangGraph ``StateGraph`` of the four stages, compiled."""
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END, START, StateGraph

    def request_of(state: AgentState, opts: RunOptions) -> PlanRequest:
        return agent.plan_request(state["request"], state.get("resources") or {}, state.get("history") or [], opts)

    async def plan_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: RunOptions = config["configurable"]["agent_options"]
        try:
            plan = await agent.planner.plan(request_of(state, opts))
        except LLMError as exc:
            return {"plan": None, "llm_down": True, "problems": [PlanProblem(f"the LLM could not plan: {exc.message}")],
                    "notes": [f"the LLM is unavailable: {exc.message}"]}
        return {"plan": plan}

    async def validate_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: RunOptions = config["configurable"]["agent_options"]
        plan = state.get("plan")
        if plan is None:
            return {"vplan": None}
        unreadable = _unreadable(plan)
        if unreadable is not None:
            return {"vplan": None, "problems": unreadable}
        if plan.refusal and not plan.tasks:
            return {"vplan": None, "problems": []}
        vplan, problems = validate_plan(plan, agent.catalog(), state.get("resources") or {},
                                        max_tasks=agent.settings.max_plan_tasks)
        if vplan is None:
            return {"vplan": None, "problems": problems}
        _writer()(aev.PlanReady(agent_run=opts.agent_run, plan=plan.to_hugginggpt(), attempt=state.get("attempts", 0),
                                notes=plan.notes, warnings=vplan.warnings, refusal=plan.refusal))
        return {"vplan": vplan, "problems": [], "notes": list(state.get("notes") or []) + plan.notes}

    def after_validate(state: AgentState) -> str:
        if state.get("vplan") is not None:
            return "select"
        if state.get("problems") and not state.get("llm_down") and state.get("attempts", 0) < agent.max_repairs:
            return "repair"
        return "respond"

    async def repair_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: RunOptions = config["configurable"]["agent_options"]
        attempt = state.get("attempts", 0) + 1
        problems = state.get("problems") or []
        _writer()(aev.PlanRepaired(agent_run=opts.agent_run, problems=[str(p) for p in problems], attempt=attempt,
                                   issues=[dataclasses.asdict(p) for p in problems]))
        plan = state.get("plan") or Plan()
        try:
            plan = await agent.planner.repair(request_of(state, opts), plan, problems)
        except LLMError as exc:
            return {"attempts": attempt, "llm_down": True,
                    "problems": [*problems, PlanProblem(f"the LLM could not repair the plan: {exc.message}")]}
        return {"plan": plan, "attempts": attempt}

    async def select_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: RunOptions = config["configurable"]["agent_options"]
        vplan = state["vplan"]
        assert vplan is not None
        selections = await asyncio.to_thread(agent.select, vplan, state["request"], opts.llm)
        if selections:
            _writer()(aev.ModelsSelected(agent_run=opts.agent_run, selections=selections))
        return {"vplan": vplan}

    async def execute_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: RunOptions = config["configurable"]["agent_options"]
        vplan = state["vplan"]
        assert vplan is not None
        outcomes, final = await execute_plan(vplan, registry=agent.registry, settings=agent.settings,
                                             profile=agent.profile, opts=opts, emit=_writer(),
                                             retries=agent.task_retries)
        return {"outcomes": outcomes, "runs": [final] if final is not None else []}

    async def respond_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        opts: RunOptions = config["configurable"]["agent_options"]
        emit = _writer()
        vplan = state.get("vplan")
        outcomes: dict[int, TaskOutcome] = state.get("outcomes") or {}
        notes = list(state.get("notes") or [])
        problems = list(state.get("problems") or [])
        plan = state.get("plan")
        if vplan is None and problems:
            emit(aev.PlanRejected(agent_run=opts.agent_run, problems=[str(p) for p in problems]))
            notes.append("no tools were used because the plan could not be made valid: "
                         + "; ".join(str(p) for p in problems))
        captions: dict[str, str] = {}
        if vplan is not None and agent.describe_media and outcomes and not opts.cancelled:
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
        if plan is not None and plan.refusal and plan.tasks:
            notes.append(f"not done: {plan.refusal}")
        refusal = plan.refusal if plan is not None else None
        if opts.cancelled:
            answer = "Cancelled.\n" + report(results, notes, refusal)
        elif opts.llm is None:
            answer = report(results, notes, refusal)
            emit(aev.AnswerDelta(agent_run=opts.agent_run, text=answer))  # streamed like an LLM's answer
        else:
            messages = agent.respond_messages({**state, "notes": notes}, results)
            pieces: list[str] = []
            try:
                async for piece in opts.llm.achat(messages, stream=True):
                    pieces.append(piece)
                    emit(aev.AnswerDelta(agent_run=opts.agent_run, text=piece))
                answer = "".join(pieces).strip()
            except LLMError as exc:
                answer = report(results, notes, refusal) + \
                    f"\n(The LLM could not write the answer: {exc.message})"
        status = outcome_status(outcomes, plan, cancelled=opts.cancelled, llm_down=bool(state.get("llm_down")))
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


def results_json(result: AgentResult) -> str:
    """A compact JSON view of a result (for logs and the CLI)."""
    return json.dumps({
        "status": result.status, "answer": result.answer,
        "tasks": {i: {"task": t.task, "status": t.status, "tool": t.tool, "error": t.error,
                      "outputs": {p: r.id for p, r in t.outputs.items()}}
                  for i, t in result.tasks.items()},
        "refusals": result.refusals,
        "artifacts": [a.id for a in result.artifacts],
    }, indent=2)
