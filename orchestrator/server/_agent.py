"""The server's view of the agent: prompts and chat messages in, events and an outcome out.

The agent (:class:`orchestrator.agent.Agent`) is built lazily from the core
settings (``llm``, ``profile``) the first time a prompt or chat run needs it, or
injected (``create_app(agent=...)``). This adapter turns what the agent streams
(engine events, agent events such as ``plan_ready`` and ``answer_delta``, and its
final result) into JSON events for the run log plus one :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, is_dataclass
from typing import Any

from orchestrator.artifacts import ArtifactRef, ArtifactStore
from orchestrator.errors import ConfigError

from ._outcome import Outcome, event_json

__all__ = ["AgentBackend"]

logger = logging.getLogger("orchestrator.server.agent")

_DELTA_TYPES = ("answer_delta", "text_delta", "delta")


class AgentBackend:
    """Runs prompts (plan mode) and chat messages (signal-span mode) on an agent."""

    def __init__(self, agent: Any = None, *, store: ArtifactStore, core_settings: Any, registry: Any = None,
                 factory: Callable[[], Any] | None = None) -> None:
        self._agents: dict[str, Any] = {"": agent} if agent is not None else {}
        self._factory = factory
        self.store = store
        self.core = core_settings
        self.registry = registry
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the agent
    def get(self, profile: str | None = None) -> Any:
        """The agent for ``profile`` (default: the settings' profile), built on first use."""
        key = profile or ""
        agent = self._agents.get(key)
        if agent is not None:
            return agent
        with self._lock:
            if key not in self._agents:
                if self._factory is not None:
                    self._agents[key] = self._factory() if not profile else self._factory_for(profile)
                else:
                    self._agents[key] = self._build(profile)
        return self._agents[key]

    def _factory_for(self, profile: str) -> Any:
        assert self._factory is not None
        try:
            return self._factory(profile=profile)
        except TypeError:
            return self._factory()

    def _build(self, profile: str | None) -> Any:
        try:
            from orchestrator.agent import Agent, make_llm
        except ImportError as exc:
            raise ConfigError(f"prompt runs need the agent (orchestrator.agent), which cannot be imported: {exc}") from exc
        kwargs: dict[str, Any] = {"store": self.store, "profile": profile or self.core.profile, "settings": self.core}
        if self.registry is not None:
            kwargs["registry"] = self.registry
        kwargs["llm"] = make_llm(self.core.llm, self.core, **({"registry": self.registry} if self.registry else {}))
        return Agent(**_accepted(Agent, kwargs))

    @property
    def llm_name(self) -> str:
        return str(getattr(self.core, "llm", "heuristic"))

    # ------------------------------------------------------------------ runs
    async def run(self, prompt: str, *, inputs: dict[str, ArtifactRef], run_id: str, cancel: threading.Event,
                  session_id: str | None = None, seed: int | None = None, cache: bool = True,
                  profile: str | None = None) -> AsyncIterator[Any]:
        """Plan-and-execute a prompt: yields event dicts, then an :class:`Outcome`."""
        agent = await asyncio.to_thread(self.get, profile)
        options = {"inputs": inputs or None, "session_id": session_id, "agent_run": run_id, "run_id": run_id,
                   "seed": seed, "cache": cache, "cancel": cancel}
        stream = agent.astream(prompt, **_accepted(agent.astream, options))
        async for item in _collect(stream):
            yield item

    async def chat(self, message: str, *, media: dict[str, ArtifactRef], run_id: str, cancel: threading.Event,
                   session_id: str | None = None, seed: int | None = None) -> AsyncIterator[Any]:
        """One chat turn with signal spans: yields event dicts, then an :class:`Outcome`."""
        agent = await asyncio.to_thread(self.get)
        method = getattr(agent, "achat_stream", None)
        if method is None:
            raise ConfigError("this agent has no chat mode (achat_stream)")
        options = {"seed": seed, "cancel": cancel, "run_id": run_id, "agent_run": run_id}
        stream = method(session_id or uuid.uuid4().hex, message, media or None, **_accepted(method, options))
        async for item in _collect(stream):
            yield item


def _accepted(fn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``fn`` accepts (all of them if it takes ``**kwargs``), leaving out Nones."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {k: v for k, v in options.items() if v is not None}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in options.items() if v is not None}
    return {k: v for k, v in options.items() if k in params and v is not None}


def _is_result(item: Any) -> bool:
    """An agent's final result (not an event): has an answer and no event ``type``."""
    if isinstance(item, dict):
        return False
    return getattr(item, "type", None) is None and any(hasattr(item, a) for a in ("answer", "text"))


class _Collector:
    """Builds the outcome from the events seen and the agent's final result."""

    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.answer: str | None = None
        self.plan: Any = None
        self.outputs: dict[str, ArtifactRef] = {}
        self.errors: dict[str, str] = {}
        self.failed: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.status: str | None = None
        self.result: Any = None

    def see(self, doc: dict[str, Any]) -> None:
        kind = doc.get("type")
        if kind in _DELTA_TYPES:
            piece = doc.get("delta", doc.get("text"))
            if isinstance(piece, str):
                self.deltas.append(piece)
            return
        if kind in ("plan_ready", "plan") and doc.get("plan") is not None:
            self.plan = doc["plan"]
        if kind == "answer_ready" and isinstance(doc.get("text"), str):
            self.answer = doc["text"]
        elif kind == "chat_done" and isinstance(doc.get("message"), str):
            self.answer = doc["message"]
        elif kind == "agent_finished":
            if isinstance(doc.get("answer"), str) and self.answer is None:
                self.answer = doc["answer"]
            if isinstance(doc.get("status"), str):
                self.status = doc["status"]
        elif kind in ("run_finished", "run_failed"):
            if kind == "run_finished":
                for name, ref in (doc.get("outputs") or {}).items():
                    self._add(name, ref)
            self.errors.update({f"{k}" if k != "<run>" else f"<run {str(doc.get('run_id', ''))[:8]}>": v
                                for k, v in (doc.get("errors") or {}).items()})
        elif kind == "span_finished" and doc.get("error"):
            self.errors[f"{doc.get('kind', 'span')}_{int(doc.get('index', 0)) + 1}"] = str(doc["error"])
        elif kind in ("agent_failed", "error") and isinstance(doc.get("error"), dict):
            self.failed = doc["error"]
        if kind == "span_finished":
            label = f"{doc.get('kind', 'span')}_{int(doc.get('index', 0)) + 1}"
            refs = ([doc["ref"]] if isinstance(doc.get("ref"), dict) else []) + list(doc.get("refs") or [])
            for i, ref in enumerate(refs):
                self._add(label if i == 0 else f"{label}_{i + 1}", ref)
        for ref in doc.get("artifacts") or []:
            if isinstance(ref, dict):
                self._add(f"{ref.get('modality', 'artifact')}_{len(self.outputs) + 1}", ref)
        if kind not in ("span_finished", "run_finished") and isinstance(doc.get("ref"), dict) and "id" in doc["ref"]:
            self._add(doc.get("name") or f"{doc['ref'].get('modality', 'artifact')}_{len(self.outputs) + 1}", doc["ref"])

    def _add(self, name: str, ref: Any) -> None:
        try:
            value = ref if isinstance(ref, ArtifactRef) else ArtifactRef.model_validate(ref)
        except Exception:  # noqa: BLE001 - not a ref: ignore
            return
        if any(v.id == value.id for v in self.outputs.values()):
            return
        self.outputs[str(name)] = value

    def take_result(self, result: Any) -> None:
        self.result = result
        answer = getattr(result, "answer", None) or getattr(result, "text", None)
        if isinstance(answer, str):
            self.answer = answer
        plan = getattr(result, "plan", None)
        if plan is not None:
            self.plan = _plain(plan)
        refs = None
        for attr in ("outputs", "artifacts", "refs", "artifact_refs"):
            refs = getattr(result, attr, None)
            if refs:
                break
        if isinstance(refs, dict):
            earlier, self.outputs = self.outputs, {}
            for name, ref in refs.items():  # the result's own names first
                self._add(name, ref)
            for name, ref in earlier.items():
                self._add(name, ref)
        elif isinstance(refs, (list, tuple)):
            for i, ref in enumerate(refs, start=1):
                modality = getattr(ref, "modality", None) or (ref.get("modality") if isinstance(ref, dict) else "artifact")
                self._add(f"{getattr(modality, 'value', modality)}_{i}", ref)
        status = getattr(result, "status", None)
        wf = getattr(result, "workflow", None) or getattr(result, "run", None)
        if status is None and wf is not None:
            status = getattr(wf, "status", None)
        if wf is not None:
            self.errors.update(getattr(wf, "errors", None) or {})
        if isinstance(status, str):
            self.status = "succeeded" if status == "no_tools" else status
        tasks = getattr(result, "tasks", None) or {}
        if tasks:  # the per-task errors say it better than the workflow's per-port ones
            self.errors = {}
        for task in tasks.values():
            error = getattr(task, "error", None)
            if error and getattr(task, "status", "") not in ("succeeded", "cached"):
                self.errors[f"t{getattr(task, 'id', '?')}_{getattr(task, 'task', 'task')}"] = str(error)
        errors = getattr(result, "errors", None)
        if isinstance(errors, dict):
            self.errors.update({str(k): str(v) for k, v in errors.items()})
        self.problems = [str(p) for p in getattr(result, "problems", None) or []]

    def outcome(self) -> Outcome:
        answer = self.answer if self.answer is not None else ("".join(self.deltas) if self.deltas else None)
        status = "succeeded" if self.status == "no_tools" else self.status
        if status not in ("succeeded", "partial", "failed", "cancelled"):
            if self.failed is not None:
                status = "failed"
            elif self.errors and not self.outputs and not answer:
                status = "failed"
            else:
                status = "partial" if self.errors else "succeeded"
        error = self.failed
        if status == "failed" and error is None:
            message = "; ".join(f"{k}: {v}" for k, v in self.errors.items()) or "; ".join(self.problems) or "failed"
            error = {"type": "AgentError", "message": message}
        return Outcome(status=status, outputs=self.outputs, errors=self.errors, error=error, answer=answer,
                       plan=_plain(self.plan))


async def _collect(stream: Any) -> AsyncIterator[Any]:
    """Events as JSON dicts, then the :class:`Outcome` (the agent's result object, carried by
    its ``agent_finished`` event or yielded bare, wins over what the events said)."""
    collector = _Collector()
    async for item in stream:
        if _is_result(item):
            collector.take_result(item)
            continue
        doc = event_json(item)
        collector.see(doc)
        result = getattr(item, "result", None)
        if result is not None and doc.get("type") == "agent_finished":
            collector.take_result(result)
        yield doc
    yield collector.outcome()


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)
