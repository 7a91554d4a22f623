"""Profiles: which tool and model serve each task. Data, not code.

A profile is a TOML file. For every task it lists candidates in order of
preference (the first is the default); each names a registered tool and a model:
a hub id, a local directory, ``zoo:<name>`` (a tiny zoo checkpoint) or a
tool-specific reference such as ``espeak-ng:en``::

    name = "mine"
    extends = "default"               # start from a built-in (or another file)

    [[tasks.text-to-image]]
    tool = "image.generate"
    model = "/models/my-finetuned-sd"  # a local diffusers folder
    dtype = "float16"
    options = { steps = 30, guidance = 7.0 }

    [llm]
    model = "Qwen/Qwen2.5-1.5B-Instruct"

Built-ins live next to this module (``profiles/tiny.toml``, ``profiles/default.toml``).
:func:`get_profile` applies, in order: the named profile (``Settings.profile``), the
file in ``Settings.profile_file`` (``ORCHESTRATOR_PROFILE_FILE``), per-task environment
overrides ``ORCHESTRATOR_MODEL__<TASK>`` (``TEXT_TO_IMAGE`` for ``text-to-image``;
``LLM`` for the chat model), then an ``overrides`` mapping passed in. An override
value is a model (it replaces the first candidate's model, keeping its tool), a
``{"tool": ..., "model": ...}`` table, or a list of them; in the environment the
table or list is written as JSON.

>>> p = get_profile("tiny")
>>> p.resolve("text-to-image").model
'zoo:tiny-sd'
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import ConfigError

__all__ = ["BUILTIN_PROFILES", "ENV_PREFIX", "ModelChoice", "Profile", "get_profile", "load_profile"]

PROFILES_DIR = Path(__file__).with_name("profiles")
BUILTIN_PROFILES = ("tiny", "offline", "default")
ENV_PREFIX = "ORCHESTRATOR_MODEL__"
LLM_TASK = "llm"


class ModelChoice(BaseModel):
    """One candidate for a task: the tool that runs it and the model it loads.

    ``model`` is a hub id, a local path, ``zoo:<name>`` or a tool-specific reference.
    ``options`` are generation defaults the tool reads (``steps``, ``guidance`` …) and
    load options the runtime reads (``variant``, ``revision``, ``backend``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    tool: str | None = None
    model: str = Field(min_length=1)
    dtype: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def zoo_name(self) -> str | None:
        """The zoo checkpoint name for ``zoo:<name>`` models, else None."""
        return self.model[4:] if self.model.startswith("zoo:") else None

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def __hash__(self) -> int:  # options is a dict: hash what identifies the choice
        return hash((self.task, self.tool, self.model, self.dtype, json.dumps(self.options, sort_keys=True, default=str)))


class Profile:
    """Ordered model candidates per task; see the module docstring for the file format."""

    def __init__(
        self,
        name: str,
        tasks: Mapping[str, Iterable[ModelChoice]],
        *,
        llm: ModelChoice | None = None,
        description: str = "",
        sources: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.description = description
        self.sources = tuple(sources)
        self._tasks = {task: tuple(choices) for task, choices in tasks.items() if choices}
        self.llm = llm

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, tasks={self.tasks()})"

    def tasks(self) -> list[str]:
        """Every task this profile serves, sorted."""
        return sorted(self._tasks)

    def candidates(self, task: str) -> list[ModelChoice]:
        """The candidates for ``task`` in order of preference (empty if none)."""
        return list(self._tasks.get(task, ()))

    def resolve(self, task: str, *, tool: str | None = None, model: str | None = None) -> ModelChoice:
        """The choice for ``task``: the first candidate, or the first for ``tool``.

        ``model`` (a tool's ``model`` param) picks the candidate with that model, or
        makes a new choice for it with no profile options (those were tuned for
        another checkpoint). Raises :class:`ConfigError` when nothing fits.
        """
        cands = [c for c in self.candidates(task) if tool is None or c.tool == tool]
        if model is not None:
            for c in cands:
                if c.model == model:
                    return c
            use_tool = tool or (cands[0].tool if cands else None)
            return ModelChoice(task=task, tool=use_tool, model=model, dtype=cands[0].dtype if cands else None)
        if not cands:
            which = f" with tool {tool!r}" if tool else ""
            raise ConfigError(
                f"profile {self.name!r} has no model for task {task!r}{which}; add one to the profile "
                f"or set {ENV_PREFIX}{task.upper().replace('-', '_')}",
                task=task, tool=tool, profile=self.name,
            )
        return cands[0]

    def zoo_names(self) -> list[str]:
        """The tiny zoo checkpoints this profile refers to (what ``zoo build`` builds)."""
        choices = [c for cs in self._tasks.values() for c in cs] + ([self.llm] if self.llm else [])
        return sorted({c.zoo_name for c in choices if c.zoo_name})

    def with_overrides(self, overrides: Mapping[str, Any] | None, *, source: str = "overrides") -> Profile:
        """A copy with some tasks replaced; see the module docstring for the value forms."""
        if not overrides:
            return self
        tasks = dict(self._tasks)
        llm = self.llm
        for task, value in overrides.items():
            current = list(llm and [llm] or []) if task == LLM_TASK else list(tasks.get(task, ()))
            new = _override(task, value, current, source)
            if task == LLM_TASK:
                llm = new[0] if new else None
            else:
                tasks[task] = tuple(new)
        return Profile(self.name, tasks, llm=llm, description=self.description, sources=(*self.sources, source))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (catalog endpoints, ``orchestrator profile show``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "sources": list(self.sources),
            "tasks": {t: [c.model_dump(exclude={"task"}, exclude_defaults=True) for c in cs] for t, cs in sorted(self._tasks.items())},
        }
        if self.llm is not None:
            out["llm"] = self.llm.model_dump(exclude={"task", "tool"}, exclude_defaults=True)
        return out


def _override(task: str, value: Any, current: list[ModelChoice], source: str) -> list[ModelChoice]:
    if isinstance(value, ModelChoice):
        return [value, *[c for c in current if c != value]]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"override for task {task!r} in {source} is not valid JSON: {exc}", task=task) from exc
        else:
            first = current[0] if current else None
            choice = ModelChoice(task=task, tool=first.tool if first else None, model=text, dtype=first.dtype if first else None)
            return [choice, *[c for c in current if c.model != text]]
    if isinstance(value, Mapping):
        entry = dict(value)
        if "tool" not in entry and current:
            entry["tool"] = current[0].tool
        choice = _choice(task, entry, source)
        return [choice, *[c for c in current if (c.tool, c.model) != (choice.tool, choice.model)]]
    if isinstance(value, (list, tuple)):
        return [_choice(task, v if isinstance(v, Mapping) else {"model": v}, source) for v in value]
    raise ConfigError(f"override for task {task!r} in {source} must be a model, a table or a list", task=task)


def _choice(task: str, entry: Mapping[str, Any], source: str) -> ModelChoice:
    try:
        return ModelChoice(task=task, **entry)
    except (ValidationError, TypeError) as exc:
        raise ConfigError(f"bad model entry for task {task!r} in {source}: {exc}", task=task) from exc


def _parse(doc: Mapping[str, Any], source: str) -> tuple[dict[str, list[ModelChoice]], ModelChoice | None]:
    unknown = set(doc) - {"name", "description", "extends", "tasks", "llm"}
    if unknown:
        raise ConfigError(f"profile {source} has unknown top-level key(s) {sorted(unknown)}", profile=source)
    tasks: dict[str, list[ModelChoice]] = {}
    for task, entries in dict(doc.get("tasks", {})).items():
        if isinstance(entries, Mapping):
            entries = [entries]
        if not isinstance(entries, list):
            raise ConfigError(f"task {task!r} in {source} must be a list of {{tool, model}} tables", task=task)
        choices = []
        for entry in entries:
            if not isinstance(entry, Mapping) or "tool" not in entry:
                raise ConfigError(f"every candidate of task {task!r} in {source} needs a tool and a model", task=task)
            choices.append(_choice(task, entry, source))
        tasks[task] = choices
    llm = doc.get("llm")
    llm_choice = _choice(LLM_TASK, llm, source) if isinstance(llm, Mapping) and llm else None
    return tasks, llm_choice


@lru_cache(maxsize=32)
def _read_toml(path: str, mtime: float) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile file {path} is not valid TOML: {exc}", profile=path) from exc


def _profile_file(path_or_name: str | os.PathLike[str]) -> Path:
    text = os.fspath(path_or_name)
    if text in BUILTIN_PROFILES:
        return PROFILES_DIR / f"{text}.toml"
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if not path.suffix and (PROFILES_DIR / f"{text}.toml").is_file():
        return PROFILES_DIR / f"{text}.toml"
    raise ConfigError(
        f"no profile named {text!r}: use one of {list(BUILTIN_PROFILES)} or the path of a TOML file", profile=text
    )


def load_profile(path_or_name: str | os.PathLike[str], *, _depth: int = 0, default_base: str | None = None) -> Profile:
    """Load a built-in profile by name or a TOML file by path (following ``extends``)."""
    if _depth > 8:
        raise ConfigError(f"profile {path_or_name} extends too deeply (a cycle?)", profile=str(path_or_name))
    path = _profile_file(path_or_name)
    doc = _read_toml(str(path), path.stat().st_mtime)
    tasks, llm = _parse(doc, str(path))
    name = str(doc.get("name") or path.stem)
    base_name = doc.get("extends") or default_base
    if base_name:
        base_path = path.parent / base_name if str(base_name).endswith(".toml") else base_name
        base = load_profile(base_path, _depth=_depth + 1)
        merged = {t: base.candidates(t) for t in base.tasks()}
        merged.update(tasks)
        return Profile(name, merged, llm=llm or base.llm, description=str(doc.get("description", base.description)),
                       sources=(*base.sources, str(path)))
    return Profile(name, tasks, llm=llm, description=str(doc.get("description", "")), sources=(str(path),))


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Per-task overrides from ``ORCHESTRATOR_MODEL__<TASK>`` variables."""
    env = os.environ if environ is None else environ
    return {
        key[len(ENV_PREFIX):].lower().replace("_", "-"): value
        for key, value in sorted(env.items())
        if key.startswith(ENV_PREFIX) and value.strip()
    }


def get_profile(name: str | None = None, *, overrides: Mapping[str, Any] | None = None, settings: Any = None) -> Profile:
    """The active profile: ``name`` (else ``Settings.profile``, default ``tiny``) plus overrides.

    ``Settings.profile_file`` is applied when no ``name`` is given; a file without
    ``extends`` overlays the profile named by the settings.
    """
    from orchestrator.settings import get_settings

    s = settings or get_settings()
    if name is None and s.profile_file:
        profile = load_profile(s.profile_file, default_base=s.profile)
    else:
        profile = load_profile(name or s.profile)
    profile = profile.with_overrides(env_overrides(), source="environment")
    return profile.with_overrides(overrides)
