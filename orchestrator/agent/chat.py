"""Chat mode: stream the LLM's reply and dispatch each signal span the moment it closes.

Each closed span becomes a one-task plan (``<image>`` -> ``text-to-image``, or
``image-to-image`` with ``source=``; a ``<plan>`` span is a whole plan) that is
validated, given a tool and model, compiled and started on the workflow engine
as an asyncio task, while the reply keeps streaming. The final message is the
text with each span replaced by its artifact ref (``[image: sha256:…]``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import LLMError, OrchestratorError, PlanError
from orchestrator.workflow.events import RunStarted

from . import events as aev
from ._execute import RunOptions, execute_plan
from .plan import Plan, PlanTask, Resource, parse_plan, validate_plan
from .planner import PlanRequest
from .spans import SPAN_KINDS, Span, SpanIssue, SpanOverLimit, SpanParser, TextPiece, render_ref

if TYPE_CHECKING:  # typing only: graph.py imports this module, never the other way at run time
    from .graph import Agent

__all__ = ["ChatRunner", "offline_reply"]

CHAT_KINDS = {**SPAN_KINDS, "plan": "plan"}
_SOURCE_ATTRS = ("source", "from", "edit", "image")


@dataclass
class _Slot:
    """Where a span's result goes in the final message."""

    index: int
    kind: str
    refs: list[ArtifactRef] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    error: str | None = None

    def render(self) -> str:
        if self.error is not None and not self.refs and not self.texts:
            return render_ref(self.kind, error=self.error)
        parts = [render_ref(r.modality.value if self.kind == "plan" else self.kind, r.id) for r in self.refs]
        parts += [f'"{t}"' for t in self.texts]
        return " ".join(parts) if parts else render_ref(self.kind, error=self.error or "no output")


class ChatRunner:
    """One chat turn of an :class:`~orchestrator.agent.graph.Agent` in a session."""

    def __init__(self, agent: Agent, session_id: str, *, seed: int | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.agent = agent
        self.cancel = cancel
        self.session_id = session_id
        self.seed = seed
        self.agent_run = uuid.uuid4().hex
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def run(self, message: str, media: Mapping[str, Any]) -> AsyncIterator[Any]:
        agent, memory = self.agent, self.agent.memory
        await asyncio.to_thread(agent.warm)
        # 1. the user's message and uploads go into the session first (they get aliases)
        uploads = await asyncio.to_thread(agent._store_inputs, media)
        with memory.lock(self.session_id):
            session = memory.load(self.session_id)
            memory.add_message(session, "user", message, [r.value for r in uploads.values()], origin="user upload")
            await asyncio.to_thread(memory.save, session)
        resources: dict[str, Resource] = dict(uploads)
        for art in memory.media_resources(session):
            resources.setdefault(art.alias, Resource(art.alias, art.ref.modality, art.ref))
        refs = memory.resolve_references(session, message)
        resolved = message
        for phrase, art in refs.items():
            resolved = resolved.replace(phrase, art.alias)
        # 2. the prompt: spans, plan tasks, the session's media
        catalog = agent.catalog()
        kinds = "\n".join(f"<{k}>…</{k}>: {task}" for k, task in SPAN_KINDS.items() if catalog.resolve(task))
        media_lines = [f"- {a.alias}: {a.ref.modality.value}" + (f" ({a.origin})" if a.origin else "")
                       for a in memory.media_resources(session)] or ["(none)"]
        system = agent.prompt("chat_spans").render(kinds=kinds or "(no generators are available)",
                                                   tasks=catalog.describe(), media="\n".join(media_lines),
                                                   max_spans=agent.max_spans_per_message)
        history = memory.context(session)
        if refs:
            history[-1] = {**history[-1], "content": history[-1]["content"] + "\n(" + "; ".join(
                f'"{p}" is {a.alias}' for p, a in refs.items()) + ")"}
        messages = [{"role": "system", "content": system}, *history]
        opts = agent.run_options(self.agent_run, seed=self.seed, cancel=self.cancel)

        # 3. stream the reply; dispatch spans as they close
        parser = SpanParser(kinds=set(CHAT_KINDS), max_spans=agent.max_spans_per_message)
        pieces: list[str | _Slot] = []
        span_tasks: list[asyncio.Task[None]] = []

        def handle(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, TextPiece):
                    pieces.append(item.text)
                    self.emit(aev.AnswerDelta(agent_run=self.agent_run, text=item.text))
                elif isinstance(item, Span):
                    slot = _Slot(item.index, item.kind)
                    pieces.append(slot)
                    span_tasks.append(asyncio.create_task(
                        self._dispatch(item, slot, resources, opts, time.perf_counter())))
                elif isinstance(item, SpanOverLimit):
                    note = f"not generated: limit of {item.limit} spans per message"
                    pieces.append(render_ref(item.kind, error=note))
                    self.emit(aev.SpanNote(agent_run=self.agent_run, kind="over_limit",
                                           detail=f"<{item.kind}> {item.content[:80]!r} {note}"))
                elif isinstance(item, SpanIssue):
                    self.emit(aev.SpanNote(agent_run=self.agent_run, kind=item.kind, detail=item.detail))

        async def reply() -> AsyncIterator[str]:
            if opts.llm is not None:
                async for delta in opts.llm.achat(messages, stream=True):
                    yield delta
                return
            request = PlanRequest(text=resolved, catalog=catalog,
                                  resources={n: r.modality for n, r in resources.items()})
            yield offline_reply(await agent.planner.plan(request))

        async def pump() -> None:
            try:
                async for delta in reply():
                    if opts.cancelled:
                        pieces.append(" (cancelled)")
                        break
                    handle(parser.feed(delta))
            except LLMError as exc:
                pieces.append(f"\n(the reply broke off: {exc})")
            handle(parser.close())

        llm_task = asyncio.create_task(pump())
        while True:
            getter = asyncio.create_task(self.queue.get())
            waiting = {getter, llm_task} if not llm_task.done() else {getter}
            pending_spans = [t for t in span_tasks if not t.done()]
            if llm_task.done() and not pending_spans and self.queue.empty():
                getter.cancel()
                break
            done, _ = await asyncio.wait(waiting | set(pending_spans), return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
            else:
                getter.cancel()
        await llm_task
        for t in span_tasks:
            await t
        while not self.queue.empty():
            yield self.queue.get_nowait()

        # 4. the final message, stored with its artifacts
        text = "".join(p if isinstance(p, str) else p.render() for p in pieces).strip()
        produced = [r for p in pieces if isinstance(p, _Slot) for r in p.refs]
        with memory.lock(self.session_id):
            session = await asyncio.to_thread(memory.load, self.session_id)
            memory.add_message(session, "assistant", text, produced, origin="chat span")
            await asyncio.to_thread(memory.save, session)
        yield aev.ChatDone(agent_run=self.agent_run, session_id=self.session_id, message=text, artifacts=produced)

    # ------------------------------------------------------------ one span
    async def _dispatch(self, span: Span, slot: _Slot, resources: Mapping[str, Resource], opts: RunOptions,
                        closed_at: float) -> None:
        agent = self.agent
        try:
            plan = self._span_plan(span, resources)
            vplan, problems = validate_plan(plan, agent.catalog(), resources)
            if vplan is None:
                raise PlanError("; ".join(str(p) for p in problems))
            seed = _int(span.attrs.get("seed"))
            await asyncio.to_thread(agent.select, vplan, span.content, opts.llm)
            for i in vplan.order:
                t = vplan.tasks[i]
                if t.tool is None:
                    raise PlanError(t.unavailable or f"no tool for {t.task}")
                if span.kind != "plan":
                    fields = agent.registry.get(t.tool).spec.params.model_fields
                    for key, value in span.attrs.items():
                        if key in fields and key != "seed":
                            t.params[key] = value
                        elif key not in ("seed", *_SOURCE_ATTRS):
                            self.emit(aev.SpanNote(agent_run=self.agent_run, kind="attribute",
                                                   detail=f"<{span.kind}> attribute {key!r} is not a parameter of "
                                                          f"{t.tool}; ignored"))
            span_opts = dataclasses.replace(opts, seed=seed if seed is not None else opts.seed)
            announced = False

            def emit(event: Any) -> None:
                nonlocal announced
                if not announced and isinstance(event, RunStarted):
                    announced = True
                    tool = vplan.tasks[vplan.order[0]].tool if vplan.order else None
                    self.emit(aev.SpanDispatched(agent_run=self.agent_run, index=span.index, kind=span.kind,
                                                 content=span.content, run_id=event.run_id, tool=tool,
                                                 latency_ms=(time.perf_counter() - closed_at) * 1000))
                self.emit(event)

            outcomes, _ = await execute_plan(vplan, registry=agent.registry, settings=agent.settings,
                                             profile=agent.profile, opts=span_opts, emit=emit,
                                             name=f"span-{self.agent_run[:8]}-{span.index}")
            used = {b.task for t in vplan.tasks.values() for bs in t.inputs.values() for b in bs if b.kind == "generated"}
            for o in sorted(outcomes.values(), key=lambda o: o.id):
                if not o.ok and o.status != "refused":
                    slot.error = o.error or o.status
                    continue
                if o.id in used:
                    continue
                for ref in o.outputs.values():
                    if ref.modality is Modality.TEXT and span.kind == "plan":
                        slot.texts.append(str(await opts.store.aload(ref))[:500])
                    elif ref.modality is not Modality.TEXT:
                        slot.refs.append(ref)
            if slot.refs or slot.texts:
                slot.error = None
        except (OrchestratorError, ValueError) as exc:
            slot.error = getattr(exc, "message", None) or str(exc)
        self.emit(aev.SpanFinished(agent_run=self.agent_run, index=span.index, kind=span.kind,
                                   ref=slot.refs[0] if slot.refs else None, refs=slot.refs, error=slot.error))

    def _span_plan(self, span: Span, resources: Mapping[str, Resource]) -> Plan:
        if span.kind == "plan":
            return parse_plan(span.content)
        task = SPAN_KINDS[span.kind]
        args: dict[str, Any] = {"text": span.content}
        source = next((span.attrs[a] for a in _SOURCE_ATTRS if a in span.attrs), None)
        if source is not None:
            if span.kind != "image":
                raise PlanError(f"<{span.kind}> spans take no source; only <image source=…> edits an image")
            task, args["image"] = "image-to-image", source
        return Plan(tasks=[PlanTask(task=task, id=0, dep=[-1], args=args)])


_SPAN_OF_TASK = {"text-to-image": "image", "text-to-audio": "audio", "text-to-music": "music",
                 "text-to-speech": "speech", "text-to-video": "video"}


def offline_reply(plan: Plan) -> str:
    """A chat reply with no LLM, from the offline planner's plan: spans for plain generation,
    a ``<plan>`` span for other tool work, else what cannot be done."""
    if not plan.tasks:
        return ("I am the offline planner: I run tools (generate or edit images, audio, speech and video, "
                "transcribe, caption …) but cannot chat. " + (plan.refusal or ""))
    if all(t.task in _SPAN_OF_TASK and not t.refs() for t in plan.tasks):
        parts = []
        for t in plan.tasks:
            kind = _SPAN_OF_TASK[t.task]
            text = str(next(iter(t.args.values()), "")).replace("<", "‹").replace(">", "›")
            parts.append(f"<{kind}>{text}</{kind}>")
        return "Here you go: " + " ".join(parts)
    return "Working on it: <plan>" + json.dumps(plan.to_hugginggpt()) + "</plan>"


def _int(value: Any) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None

