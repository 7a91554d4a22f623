"""HuggingGPT task plans: parse what an LLM wrote, validate it, compile it to a workflow.

A plan is HuggingGPT's list of tasks::

    [{"task": "image-to-text", "id": 0, "dep": [-1], "args": {"image": "e1.jpg"}},
     {"task": "text-to-speech", "id": 1, "dep": [0], "args": {"text": "<GENERATED>-0"}}]

:func:`parse_plan` accepts plans as real LLMs write them: prose or code fences
around the JSON, missing brackets, stray or missing braces, trailing commas,
``<GENERATED-0>`` for ``<GENERATED>-0``, ids and deps as strings, ``dep: -1``.
An object ``{"tasks": [...], "notes": [...], "refusal": "..."}`` is accepted too.

:func:`validate_plan` checks the plan against the available tasks (the tool
registry, text tasks such as ``summarization`` included: they are tools that ask
the LLM) and the user's resources, derives dependencies from the ``<GENERATED>-k``
references, and binds every argument to a tool port. Every problem is a typed
:class:`PlanProblem` (task id, field, message).

:func:`compile_plan` turns a validated plan into one
:class:`orchestrator.workflow.Workflow` (one node per task).
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import PlanError
from orchestrator.tool import Port, Tool

__all__ = [
    "LLM_TASKS",
    "Binding",
    "BoundTask",
    "CompiledPlan",
    "Plan",
    "PlanProblem",
    "PlanTask",
    "Resource",
    "TaskCatalog",
    "TaskInfo",
    "ValidatedPlan",
    "compile_plan",
    "normalize_task_name",
    "parse_plan",
    "resource_modality",
    "retarget",
    "validate_plan",
]

MEDIA = (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO)
ARG_MODALITIES = (Modality.TEXT, Modality.IMAGE, Modality.AUDIO, Modality.VIDEO)

# ====================================================================== models


class PlanTask(BaseModel):
    """One task of a plan (HuggingGPT's format)."""

    model_config = ConfigDict(extra="ignore")

    task: str
    id: int
    dep: list[int] = Field(default_factory=lambda: [-1])
    args: dict[str, Any] = Field(default_factory=dict)

    def refs(self) -> list[tuple[str, int]]:
        """``(arg key, task id)`` for every ``<GENERATED>-k`` in the args."""
        out = []
        for key, value in self.args.items():
            for v in value if isinstance(value, list) else [value]:
                k = generated_ref(v)
                if k is not None:
                    out.append((key, k))
        return out


class Plan(BaseModel):
    """A parsed plan: tasks plus the planner's notes (or a refusal, with its reason).

    ``source`` is the text the planner wrote (an LLM's answer), kept to show it back
    when asking for a repair; ``unreadable`` says why that text held no plan at all.
    """

    model_config = ConfigDict(extra="ignore")

    tasks: list[PlanTask] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    refusal: str | None = None
    source: str | None = Field(default=None, exclude=True)
    unreadable: str | None = Field(default=None, exclude=True)

    def to_hugginggpt(self) -> list[dict[str, Any]]:
        return [t.model_dump() for t in self.tasks]

    def to_json(self) -> str:
        if not self.notes and self.refusal is None:
            return json.dumps(self.to_hugginggpt())
        return json.dumps({"tasks": self.to_hugginggpt(), "notes": self.notes, "refusal": self.refusal})


@dataclass(frozen=True)
class PlanProblem:
    """One thing wrong with a plan, typed so a planner never parses English back.

    ``task_id`` is the plan task it concerns (``None``: the plan as a whole);
    ``field`` the argument or key (``"task"``, ``"dep"``, ``"args.image"`` ...).
    ``str(problem)`` is the sentence shown to an LLM (``"task 2: unknown task ..."``).
    """

    message: str
    task_id: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        return self.message if self.task_id is None else f"task {self.task_id}: {self.message}"


# ====================================================================== parsing
_GENERATED = re.compile(
    r"<\s*(?:generated|node)\s*(?:>\s*)?[-_:]?\s*(\d+)\s*>?",
    re.IGNORECASE,
)
_CANON_REF = re.compile(r"^<GENERATED>-(\d+)$")
_TASK_START = re.compile(r"""\{\s*["']task["']\s*:""")


def generated_ref(value: Any) -> int | None:
    """``k`` if ``value`` is a (normalized) ``<GENERATED>-k`` reference, else ``None``."""
    if isinstance(value, str):
        m = _CANON_REF.match(value.strip())
        if m:
            return int(m.group(1))
    return None


def _normalize_refs(text: str) -> str:
    return _GENERATED.sub(lambda m: f"<GENERATED>-{m.group(1)}", text)


def parse_plan(text: str) -> Plan:
    """Parse an LLM's plan, forgiving the usual formatting mistakes.

    Raises :class:`~orchestrator.errors.PlanError` (with what was expected) when
    no task list can be found at all. ``[]`` is a valid empty plan.
    """
    if not isinstance(text, str):
        raise PlanError(f"a plan is text, got {type(text).__name__}")
    try:
        return _parse_plan(text)
    except RecursionError:  # the JSON decoder on thousands of unclosed brackets
        raise PlanError("the plan nests brackets too deeply to be parsed; expected a flat JSON list of tasks",
                        excerpt=text[:200]) from None


def _parse_plan(text: str) -> Plan:
    body = _unfence(text.strip())
    body = _normalize_refs(body)
    doc = _try_json(body)
    if doc is not None:
        plan = _from_doc(doc)
        if plan is not None:
            return plan
    # broken JSON: a clean prefix (prose after it), else the task objects one by one
    first = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    prefix = _from_doc(_raw_prefix(body[first:])) if first >= 0 else None
    objects = _scan_task_objects(body)
    if prefix is not None and len(prefix.tasks) >= len(objects):
        return prefix
    if objects:
        return Plan(tasks=[_task(o, i) for i, o in enumerate(objects)])
    if re.fullmatch(r"\[\s*\]", body) or body in ("", "none", "None", "null"):
        return Plan()
    raise PlanError(
        "no task plan found: expected a JSON list like "
        '[{"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a cat"}}]',
        excerpt=text[:200],
    )


def _unfence(text: str) -> str:
    fences = re.findall(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", text, flags=re.DOTALL)
    for block in fences:
        if "task" in block or block.strip() == "[]":
            return block.strip()
    return text


def _try_json(text: str) -> Any:
    for candidate in (text, _repair_light(text)):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _raw_prefix(text: str) -> Any:
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
        return value
    except ValueError:
        return None


def _repair_light(text: str) -> str:
    text = re.sub(r",\s*([}\]])", r"\1", text)  # trailing commas
    return text


def _from_doc(doc: Any) -> Plan | None:
    if isinstance(doc, dict):
        if "task" in doc and isinstance(doc["task"], str):
            return Plan(tasks=[_task(doc, 0)])
        for key in ("tasks", "plan", "task_list", "steps"):
            if isinstance(doc.get(key), list):
                items = doc[key]
                if all(isinstance(o, dict) and "task" in o for o in items):
                    notes = doc.get("notes") or []
                    return Plan(
                        tasks=[_task(o, i) for i, o in enumerate(items)],
                        notes=[str(n) for n in (notes if isinstance(notes, list) else [notes])],
                        refusal=(str(doc["refusal"]) if doc.get("refusal") else None),
                    )
        return None
    if isinstance(doc, list):
        if all(isinstance(o, dict) and "task" in o for o in doc):
            return Plan(tasks=[_task(o, i) for i, o in enumerate(doc)])
        flat = [o for item in doc for o in (item if isinstance(item, list) else [item])]
        if flat and all(isinstance(o, dict) and "task" in o for o in flat):
            return Plan(tasks=[_task(o, i) for i, o in enumerate(flat)])
    return None


def _scan_task_objects(text: str) -> list[dict[str, Any]]:
    """Find ``{"task": ...}`` objects in broken JSON: close what is unclosed, skip stray braces."""
    starts = [m.start() for m in _TASK_START.finditer(text)]
    objects = []
    for n, start in enumerate(starts):
        limit = starts[n + 1] if n + 1 < len(starts) else len(text)
        if objects and start < objects[-1][1]:
            continue  # nested inside the previous object (cannot happen for tasks; be safe)
        end, stack = _scan(text, start, limit)
        snippet = text[start:end]
        if stack:  # unclosed: trim junk at the cut and close in reverse order
            snippet = re.sub(r"[\s,\]]*$", "", snippet)
            snippet = snippet.rstrip()
            if snippet.count('"') % 2:
                snippet += '"'
            _, stack = _scan(snippet, 0, len(snippet))
            snippet += "".join("}" if c == "{" else "]" for c in reversed(stack))
        obj = _loads_object(snippet)
        if isinstance(obj, dict) and isinstance(obj.get("task"), str):
            objects.append((obj, start + len(snippet)))
    return [o for o, _ in objects]


def _scan(text: str, start: int, limit: int) -> tuple[int, list[str]]:
    """Scan from ``start`` (a ``{``) until the object closes or ``limit``; returns (end, open stack)."""
    stack: list[str] = []
    i, in_str, quote = start, False, ""
    while i < limit:
        c = text[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                in_str = False
        elif c in "\"'" and (c == '"' or _single_quote_string(text, i)):
            in_str, quote = True, c
        elif c in "{[":
            stack.append(c)
        elif c in "}]":
            want = "{" if c == "}" else "["
            if stack and stack[-1] == want:
                stack.pop()
                if not stack:
                    return i + 1, []
            # an unmatched closer inside an object is junk: skip it
        i += 1
    return limit, stack


def _single_quote_string(text: str, i: int) -> bool:
    """A ``'`` opens a string only where JSON syntax expects a value or key (python-style dicts)."""
    prev = text[:i].rstrip()[-1:] if text[:i].strip() else ""
    return prev in ("{", "[", ",", ":")


def _loads_object(snippet: str) -> Any:
    for candidate in (snippet, _repair_light(snippet)):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    pythonish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", snippet)))
    try:
        return ast.literal_eval(_repair_light(pythonish))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _as_int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.search(r"-?\d+", value)
        if m:
            return int(m.group())
    return default


def _task(obj: Mapping[str, Any], index: int) -> PlanTask:
    task = str(obj.get("task", "")).strip()
    tid = _as_int(obj.get("id"), index)
    raw_dep = obj.get("dep", [-1])
    deps = raw_dep if isinstance(raw_dep, list) else [raw_dep]
    dep = sorted({d for d in (_as_int(d, -1) for d in deps) if d >= 0 and d != tid})  # never on itself
    args = obj.get("args") or obj.get("arguments") or {}
    if not isinstance(args, dict):
        args = {}
    clean: dict[str, Any] = {}
    for key, value in args.items():
        key = str(key).strip()
        if isinstance(value, list):
            clean[key] = [_norm_value(v) for v in value]
        else:
            clean[key] = _norm_value(value)
    return PlanTask(task=task, id=tid, dep=dep or [-1], args=clean)


def _norm_value(value: Any) -> Any:
    if isinstance(value, str):
        return _normalize_refs(value).strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


# ====================================================================== catalog
LLM_TASKS: dict[str, str] = {
    "conversational": "Chat or answer in free text.",
    "question-answering": "Answer a question about a given text.",
    "text-generation": "Write text from an instruction.",
    "summarization": "Summarize a text into a shorter version keeping the main points.",
    "translation": "Translate a text into another language.",
    "sentiment-analysis": "Say whether a text is positive, negative or neutral.",
    "keyword-extraction": "Extract the most important keywords and phrases of a text.",
    "grammar-check": "Check a text for grammatical errors and correct them.",
    "text-simplification": "Rewrite a text in simpler words.",
    "text-expansion": "Expand a short text into a more detailed, descriptive version.",
    "paraphrase": "Rewrite a text with different words, same meaning.",
    "topic-generation": "Generate a list of related topics or ideas from a text.",
    "text-classification": "Classify a text into labels.",
}
"""Text-only tasks the central LLM answers (as HuggingGPT does): each is a registered tool
(``tools/llm_text.py``) that reaches the LLM client through its context."""

TASK_ALIASES: dict[str, str] = {
    "text-summarizer": "summarization", "summarize": "summarization", "summary": "summarization",
    "text-translator": "translation", "translate": "translation",
    "text-sentiment-analysis": "sentiment-analysis", "sentiment": "sentiment-analysis",
    "keyword-extractor": "keyword-extraction", "keywords": "keyword-extraction",
    "text-grammar-checker": "grammar-check", "grammar-checker": "grammar-check",
    "text-simplifier": "text-simplification", "text-expander": "text-expansion",
    "text-paraphraser": "paraphrase", "paraphrasing": "paraphrase", "article-spinner": "paraphrase",
    "topic-generator": "topic-generation", "chat": "conversational", "text2text-generation": "text-generation",
    "audio-to-text": "automatic-speech-recognition", "speech-to-text": "automatic-speech-recognition",
    "asr": "automatic-speech-recognition", "speech-recognition": "automatic-speech-recognition",
    "tts": "text-to-speech", "image-captioning": "image-to-text", "captioning": "image-to-text",
    "vqa": "visual-question-answering", "text-to-music-generation": "text-to-music",
    "image-generation": "text-to-image", "video-generation": "text-to-video",
}


def normalize_task_name(name: str) -> str:
    """``"Text-to-Image"`` -> ``"text-to-image"``; ``"Image Search (by Image)"`` -> ``"image-search-by-image"``."""
    s = name.strip().lower()
    s = re.sub(r"[()\[\]]", " ", s)
    s = re.sub(r"[\s_/]+", "-", s.strip())
    return re.sub(r"-{2,}", "-", s).strip("-")


@dataclass
class TaskInfo:
    """What the planner knows about one task: the ports of its primary tool and all its tools."""

    task: str
    kind: Literal["tool", "llm"]
    description: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    tools: list[str] = field(default_factory=list)

    def output_port(self, modality: Modality) -> Port | None:
        return next((p for p in self.outputs if p.modality is modality), None)

    def signature(self) -> str:
        def fmt(ports: Iterable[Port]) -> str:
            parts = []
            for p in ports:
                mark = "[]" if p.many else ""
                opt = "?" if p.optional else ""
                parts.append(f"{p.name}:{p.modality.value}{mark}{opt}")
            return ", ".join(parts) or "-"

        return f"({fmt(self.inputs)}) -> ({fmt(self.outputs)})"


class TaskCatalog:
    """Tasks available to a plan: the registry's tools, by task and by tool name.

    A plan may name a task (``"image-to-text"``: the select stage picks the tool)
    or a registered tool name (``"image.ocr"``: that tool). The text tasks of
    :data:`LLM_TASKS` are tools too (``tools/llm_text.py``); their ``kind`` is
    ``"llm"`` because the LLM answers them.
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.tasks: dict[str, TaskInfo] = {}
        self.tools: dict[str, Tool] = {}
        for t in registry:
            if t.spec.task.startswith("_"):
                continue
            self.tools[t.name] = t
            info = self.tasks.get(t.spec.task)
            if info is None:
                kind: Literal["tool", "llm"] = "llm" if t.spec.task in LLM_TASKS else "tool"
                self.tasks[t.spec.task] = TaskInfo(t.spec.task, kind, t.spec.description, t.spec.inputs,
                                                   t.spec.outputs, [t.name])
            else:
                info.tools.append(t.name)

    def resolve(self, name: str) -> tuple[TaskInfo, str | None] | None:
        """``(info, pinned tool or None)`` for a task or tool name, after normalizing aliases."""
        if name in self.tools:
            t = self.tools[name]
            info = self.tasks[t.spec.task]
            return TaskInfo(info.task, "tool", t.spec.description, t.spec.inputs, t.spec.outputs, [t.name]), t.name
        for candidate in (name, normalize_task_name(name)):
            if candidate in self.tasks:
                return self.tasks[candidate], None
            alias = TASK_ALIASES.get(candidate)
            if alias and alias in self.tasks:
                return self.tasks[alias], None
        return None

    def suggest(self, name: str) -> list[str]:
        return difflib.get_close_matches(normalize_task_name(name), list(self.tasks), n=3, cutoff=0.5)

    def describe(self) -> str:
        """One line per task for an LLM prompt."""
        lines = []
        for name, info in sorted(self.tasks.items()):
            who = f"tools: {', '.join(info.tools)}" if info.kind == "tool" else "a text task the LLM answers"
            lines.append(f"- {name} {info.signature()}: {info.description} [{who}]")
        return "\n".join(lines)


# ====================================================================== validation
_EXT_MODALITY = {
    **{e: Modality.IMAGE for e in ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")},
    **{e: Modality.AUDIO for e in ("wav", "mp3", "flac", "ogg", "m4a", "aac", "opus")},
    **{e: Modality.VIDEO for e in ("mp4", "avi", "mov", "mkv", "webm", "m4v")},
    **{e: Modality.TEXT for e in ("txt", "md")},
}


def resource_modality(name: str, value: Any = None) -> Modality | None:
    """The modality of a user resource: its ref's, else its file extension's, else the object's."""
    if isinstance(value, ArtifactRef):
        return value.modality
    m = re.search(r"\.([A-Za-z0-9]{2,4})(?:[?#].*)?$", str(name))
    if m and m.group(1).lower() in _EXT_MODALITY:
        return _EXT_MODALITY[m.group(1).lower()]
    if value is not None and not isinstance(value, (str, bytes)):
        try:
            from orchestrator.artifacts import infer_modality

            return infer_modality(value)
        except Exception:  # noqa: BLE001 - unknown object: no modality
            return None
    return None


@dataclass(frozen=True)
class Resource:
    """A named user input (a file, an upload, a session artifact)."""

    name: str
    modality: Modality
    value: Any = None


@dataclass(frozen=True)
class Binding:
    """Where one port's value comes from: a resource, task ``k``'s output, or literal text."""

    kind: Literal["resource", "generated", "literal"]
    value: str  # resource name, literal text, or output port name for "generated"
    task: int | None = None
    modality: Modality = Modality.TEXT


@dataclass
class BoundTask:
    """A validated task: its kind, tool(s), port bindings and derived dependencies."""

    id: int
    task: str
    kind: Literal["tool", "llm"]
    tools: list[str]
    inputs: dict[str, list[Binding]]
    deps: list[int]
    args: dict[str, Any]
    pinned: bool = False
    tool: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    """The plan's string arguments that bind to no port (``language: French``): a text task's options."""
    unavailable: str | None = None
    """Why no tool can run this task here (set by model selection)."""

    @property
    def node_id(self) -> str:
        return f"t{self.id}"


@dataclass
class ValidatedPlan:
    """A plan whose every task is known, bound and ordered (``order`` is topological)."""

    plan: Plan
    tasks: dict[int, BoundTask]
    order: list[int]
    resources: dict[str, Resource]
    warnings: list[str] = field(default_factory=list)
    registry: Any = None

    @property
    def tool_tasks(self) -> list[BoundTask]:
        return [self.tasks[i] for i in self.order if self.tasks[i].kind == "tool"]

    @property
    def llm_tasks(self) -> list[BoundTask]:
        return [self.tasks[i] for i in self.order if self.tasks[i].kind == "llm"]


def _key_modality(key: str, ports: Iterable[Port]) -> Modality | None:
    for p in ports:
        if p.name == key:
            return p.modality
    k = key.lower()
    for m in ARG_MODALITIES:
        if k == m.value or re.fullmatch(rf"{m.value}[_-]?\d+|(?:\w+[_-])?{m.value}s?", k):
            return m
    aliases = {"prompt": Modality.TEXT, "question": Modality.TEXT, "instruction": Modality.TEXT,
               "caption": Modality.TEXT, "query": Modality.TEXT, "url": Modality.TEXT, "picture": Modality.IMAGE,
               "photo": Modality.IMAGE, "speech": Modality.AUDIO, "sound": Modality.AUDIO, "music": Modality.AUDIO,
               "clip": Modality.VIDEO}
    return aliases.get(k)


def _match_resource(value: str, resources: Mapping[str, Resource]) -> Resource | None:
    if value in resources:
        return resources[value]
    stripped = value.strip().strip("'\"")
    if stripped in resources:
        return resources[stripped]
    base = PurePosixPath(stripped).name
    for name, res in resources.items():
        if PurePosixPath(name).name == base or (res.value is not None and isinstance(res.value, ArtifactRef)
                                                and res.value.id == stripped):
            return res
    return None


def validate_plan(
    plan: Plan,
    catalog: TaskCatalog,
    resources: Mapping[str, Resource] | None = None,
    *,
    max_tasks: int | None = None,
) -> tuple[ValidatedPlan | None, list[PlanProblem]]:
    """Check a plan; return ``(validated plan, [])`` or ``(None, problems)``.

    Each problem names its task and field and says what to change (``str(problem)``
    is what an LLM is shown for a repair). A plan of more than ``max_tasks`` tasks
    (default: the ``max_plan_tasks`` setting) is refused before anything else is checked.
    """
    if max_tasks is None:
        from orchestrator.settings import get_settings

        max_tasks = get_settings().max_plan_tasks
    if len(plan.tasks) > max_tasks:
        return None, [PlanProblem(f"the plan has {len(plan.tasks)} tasks; at most {max_tasks} are allowed "
                                  "(limit max_plan_tasks): plan fewer, broader tasks", None, "tasks")]
    resources = dict(resources or {})
    problems: list[PlanProblem] = []

    def problem(task_id: int | None, field: str | None, message: str) -> None:
        problems.append(PlanProblem(message, task_id, field))

    warnings: list[str] = []
    by_id: dict[int, PlanTask] = {}
    for t in plan.tasks:
        if t.id in by_id:
            problem(t.id, "id", f"task ids must be unique: id {t.id} is used twice")
        by_id[t.id] = t
    infos: dict[int, tuple[TaskInfo, str | None]] = {}
    for t in plan.tasks:
        resolved = catalog.resolve(t.task)
        if resolved is None:
            near = catalog.suggest(t.task)
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            problem(t.id, "task", f"unknown task {t.task!r}{hint}; use one of the listed tasks")
            continue
        infos[t.id] = resolved

    bound: dict[int, BoundTask] = {}
    for t in plan.tasks:
        if t.id not in infos:
            continue
        info, pinned = infos[t.id]
        values: dict[Modality, list[tuple[str, Binding]]] = {m: [] for m in ARG_MODALITIES}
        deps: set[int] = set()
        options: dict[str, str] = {}
        for key, raw in t.args.items():
            modality = _key_modality(key, info.inputs)
            items = raw if isinstance(raw, list) else [raw]
            if modality is None:
                if isinstance(raw, str) and key not in ("model", "seed"):
                    options[key] = raw
                if info.kind == "llm":
                    continue  # a text task's option (language, labels …), told to the LLM
                if key not in ("model", "seed") and not isinstance(raw, (dict, bool)):
                    warnings.append(f"task {t.id}: argument {key!r} is not an input of {info.task}; ignored")
                continue
            for item in items:
                if not isinstance(item, str):
                    if item is not None:
                        problem(t.id, f"args.{key}", f"argument {key!r} must be a string, got {type(item).__name__}")
                    continue
                k = generated_ref(item)
                if k is not None:
                    if k == t.id:
                        problem(t.id, f"args.{key}", f"argument {key!r} refers to its own output <GENERATED>-{k}")
                        continue
                    if k not in by_id:
                        problem(t.id, f"args.{key}", f"argument {key!r} refers to <GENERATED>-{k}, "
                                        f"but there is no task {k}")
                        continue
                    if k not in infos:
                        continue  # that task is already reported unknown
                    src = infos[k][0]
                    port = src.output_port(modality)
                    if port is None:
                        outs = ", ".join(p.modality.value for p in src.outputs)
                        problem(t.id, f"args.{key}", f"argument {key!r} needs {modality.value}, but <GENERATED>-{k} "
                                        f"is the output of task {k} ({src.task}), which produces {outs}")
                        continue
                    deps.add(k)
                    values[modality].append((key, Binding("generated", port.name, task=k, modality=modality)))
                    continue
                res = _match_resource(item, resources)
                if res is not None:
                    if res.modality is not modality and modality is not Modality.TEXT:
                        problem(t.id, f"args.{key}", f"argument {key!r} needs {modality.value}, but resource "
                                        f"{res.name!r} is {res.modality.value}")
                        continue
                    if res.modality is modality:
                        values[modality].append((key, Binding("resource", res.name, modality=modality)))
                        continue
                if modality is Modality.TEXT:
                    values[modality].append((key, Binding("literal", item, modality=Modality.TEXT)))
                    continue
                known = ", ".join(sorted(n for n, r in resources.items() if r.modality is modality)) or "none"
                what = "a URL; download it first" if re.match(r"https?://", item) else "not among the user's resources"
                problem(t.id, f"args.{key}", f"{modality.value} argument {key!r} = {item!r} is {what} "
                                f"(available {modality.value} resources: {known})")
        # bind values to ports, modality by modality, exact port names first
        inputs: dict[str, list[Binding]] = {}
        for modality, items in values.items():
            ports = [p for p in info.inputs if p.modality is modality]
            if not items:
                continue
            if not ports:
                if info.kind == "llm":
                    problem(t.id, "args", f"{info.task} is answered by the LLM from text; it cannot take "
                                    f"{modality.value} (add a task that turns the {modality.value} into text first)")
                else:
                    warnings.append(f"task {t.id}: {info.task} takes no {modality.value}; argument(s) "
                                    f"{sorted({k for k, _ in items})} ignored")
                continue
            queue = sorted(items, key=lambda kv: 0 if any(p.name == kv[0] for p in ports) else 1)
            named = {p.name for p in ports}
            for port in ports:
                if not queue:
                    break
                exact = [kv for kv in queue if kv[0] == port.name]
                if port.many:
                    take = exact or [kv for kv in queue if kv[0] not in named or kv[0] == port.name]
                    inputs[port.name] = [b for _, b in take]
                    queue = [kv for kv in queue if kv not in take]
                else:
                    pick = exact[0] if exact else next((kv for kv in queue if kv[0] not in named), None)
                    if pick is None:
                        continue
                    inputs[port.name] = [pick[1]]
                    queue.remove(pick)
            if queue:
                warnings.append(f"task {t.id}: {info.task} takes {len(ports)} {modality.value} input(s); "
                                f"extra argument(s) {[k for k, _ in queue]} ignored")
        for port in info.inputs:
            if not port.optional and port.name not in inputs:
                problem(t.id, f"args.{port.name}", f"{info.task} needs a {port.modality.value} argument "
                                f"({port.name!r}) and has none")
        for d in t.dep:
            if d >= 0 and d not in by_id:
                warnings.append(f"task {t.id}: dep {d} names no task; ignored")
        bound[t.id] = BoundTask(
            id=t.id, task=info.task, kind=info.kind, tools=list(info.tools), inputs=inputs, deps=sorted(deps),
            args=dict(t.args), pinned=pinned is not None, tool=pinned, options=options,
        )

    order = _topological(bound, problems)
    if problems:
        return None, problems
    return ValidatedPlan(plan=plan, tasks=bound, order=order, resources=resources, warnings=warnings,
                         registry=catalog.registry), []


def _topological(tasks: Mapping[int, BoundTask], problems: list[PlanProblem]) -> list[int]:
    indeg = {i: 0 for i in tasks}
    users: dict[int, list[int]] = {i: [] for i in tasks}
    for t in tasks.values():
        for d in t.deps:
            if d in tasks:
                indeg[t.id] += 1
                users[d].append(t.id)
    ready = sorted(i for i, n in indeg.items() if n == 0)
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in sorted(users[i]):
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
        ready.sort()
    if len(order) < len(tasks):
        stuck = sorted(set(tasks) - set(order))
        for i in stuck:
            problems.append(PlanProblem(f"tasks {stuck} depend on each other in a cycle; a task may only use outputs "
                                        "of other tasks that do not depend on it", i, "dep"))
    return order


# ====================================================================== compile
def _input_name(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:40] or "input"
    if not re.match(r"[A-Za-z_]", base):
        base = "r_" + base
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


@dataclass
class CompiledPlan:
    """The workflow of a plan plus the run inputs it needs."""

    workflow: Any
    run_inputs: dict[str, Any]
    node_of_task: dict[int, str]
    outputs_of_task: dict[int, dict[str, str]]  # task id -> {port: workflow output name}


def compile_plan(
    vplan: ValidatedPlan,
    *,
    task_ids: Iterable[int] | None = None,
    name: str = "agent-plan",
    retries: int = 0,
    seed: int | None = None,
) -> CompiledPlan:
    """Compile the tasks ``task_ids`` (default: all) of a validated plan into one workflow.

    User resources and literal texts become workflow inputs; ``<GENERATED>-k`` becomes
    an edge from node ``t<k>`` (which must be among the compiled tasks). Every output
    port of every node is a workflow output named ``t<id>_<port>``.
    """
    from orchestrator.workflow import Workflow

    wanted = set(vplan.order if task_ids is None else task_ids)
    ids = [i for i in vplan.order if i in wanted]
    wf = Workflow(name, description="compiled from an agent task plan")
    run_inputs: dict[str, Any] = {}
    taken: set[str] = set()
    resource_inputs: dict[str, str] = {}
    node_of: dict[int, str] = {}
    outputs_of: dict[int, dict[str, str]] = {}
    for i in ids:
        t = vplan.tasks[i]
        if t.tool is None:
            t.tool = t.tools[0] if t.tools else None
        if t.tool is None:
            raise PlanError(f"task {i} ({t.task}) has no tool", task_id=i)
        sources: dict[str, str | list[str]] = {}
        for port, bindings in t.inputs.items():
            srcs = []
            for b in bindings:
                if b.kind == "generated":
                    assert b.task is not None
                    if b.task not in wanted:
                        raise PlanError(f"task {i} needs the {b.modality.value} of task {b.task}, which is not "
                                        "compiled with it", task_id=i)
                    srcs.append(f"t{b.task}.{b.value}")
                elif b.kind == "resource":
                    if b.value not in resource_inputs:
                        inp = _input_name(b.value, taken)
                        res = vplan.resources[b.value]
                        wf.add_input(inp, res.modality, description=f"user resource {b.value}")
                        resource_inputs[b.value] = inp
                        run_inputs[inp] = res.value if res.value is not None else b.value
                    srcs.append(resource_inputs[b.value])
                else:
                    inp = _input_name(f"t{i}_{port}", taken)
                    wf.add_input(inp, Modality.TEXT)
                    run_inputs[inp] = b.value
                    srcs.append(inp)
            many = any(p.name == port and p.many for p in _ports_of(vplan, t))
            sources[port] = srcs if (many or len(srcs) > 1) else srcs[0]
        params = dict(t.params)
        if t.model and "model" not in params:
            params["model"] = t.model
        node = f"t{i}"
        wf.add_node(node, t.tool, params=params, inputs=sources, retries=retries,
                    seed=None if seed is None else seed + i)
        node_of[i] = node
        outputs_of[i] = {}
        for port in _output_ports(vplan, t):
            out = f"t{i}_{port.name}"
            wf.add_output(out, f"{node}.{port.name}")
            outputs_of[i][port.name] = out
    return CompiledPlan(workflow=wf, run_inputs=run_inputs, node_of_task=node_of, outputs_of_task=outputs_of)


def _registry(vplan: ValidatedPlan) -> Any:
    if vplan.registry is not None:
        return vplan.registry
    from orchestrator.registry import default_registry

    return default_registry


def _ports_of(vplan: ValidatedPlan, t: BoundTask) -> tuple[Port, ...]:
    return _registry(vplan).get(t.tool).spec.inputs


def _output_ports(vplan: ValidatedPlan, t: BoundTask) -> tuple[Port, ...]:
    return _registry(vplan).get(t.tool).spec.outputs


def retarget(task: BoundTask, tool: Tool) -> dict[str, list[Binding]] | None:
    """Re-bind a task's inputs onto another tool of the same task (ports matched by modality, in order).

    Returns the new bindings, or ``None`` when the tool cannot take them
    (a required port stays unbound, or a binding finds no port).
    """
    ports = tool.spec.inputs
    if [(p.name, p.modality) for p in ports if p.name in task.inputs] == [
        (n, b[0].modality) for n, b in task.inputs.items() if b
    ] and all(p.optional or p.name in task.inputs for p in ports):
        return dict(task.inputs)
    pending: dict[Modality, list[Binding]] = {}
    for bindings in task.inputs.values():
        for b in bindings:
            pending.setdefault(b.modality, []).append(b)
    out: dict[str, list[Binding]] = {}
    for port in ports:
        queue = pending.get(port.modality) or []
        if not queue:
            continue
        if port.many:
            out[port.name], pending[port.modality] = list(queue), []
        else:
            out[port.name] = [queue.pop(0)]
    if any(pending.values()):
        return None
    if any(not p.optional and p.name not in out for p in ports):
        return None
    return out
