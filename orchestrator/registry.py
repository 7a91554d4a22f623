"""The tool registry: built-ins, third-party entry points, lookup by task and modality.

Third-party packages add tools through the ``orchestrator.tools`` entry-point
group; each entry point names a module (importing it registers its tools with
``@tool``) or a callable returning an iterable of :class:`~orchestrator.tool.Tool`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from orchestrator.artifacts import Modality
from orchestrator.errors import ToolNotFound, ToolRegistrationError
from orchestrator.tool import Tool

__all__ = ["ENTRY_POINT_GROUP", "ToolRegistry", "default_registry", "get_tool", "list_tools"]

logger = logging.getLogger("orchestrator.registry")

ENTRY_POINT_GROUP = "orchestrator.tools"
BUILTIN_MODULES = ("tools", "decoders")


class ToolRegistry:
    """Tools by name. ``register`` refuses duplicates and bad specs, naming the tool."""

    def __init__(self, *, autoload: bool = False) -> None:
        self._tools: dict[str, Tool] = {}
        self._autoload = autoload
        self._loaded = not autoload
        self._loading = False
        self._lock = threading.RLock()

    def register(self, t: Tool) -> Tool:
        if not isinstance(t, Tool):
            raise ToolRegistrationError(f"expected a Tool, got {type(t).__name__}", tool=getattr(t, "name", None))
        with self._lock:
            existing = self._tools.get(t.name)
            if existing is not None and existing is not t:
                raise ToolRegistrationError(
                    f"a tool named {t.name!r} is already registered (by {existing.fn.__module__})", tool=t.name
                )
            self._tools[t.name] = t
        return t

    def unregister(self, name: str) -> None:
        with self._lock:
            self._tools.pop(name, None)

    def _ensure_loaded(self) -> None:
        """Import the built-in tool modules and entry points once.

        ``_loaded`` turns true only after every module is imported, so a thread that
        sees it unlocked sees every tool; others wait on the lock. ``_loading`` lets the
        loading thread itself (a tool module looking a tool up while it imports) pass.
        """
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                self._load()
            finally:
                self._loading = False
            self._loaded = True

    def _load(self) -> None:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in BUILTIN_MODULES:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise ToolRegistrationError(f"entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            if callable(obj) and not isinstance(obj, Tool):
                for t in obj():
                    self.register(t)

    def get(self, name: str) -> Tool:
        self._ensure_loaded()
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFound(f"no tool named {name!r} is registered", tool=name) from None

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        self._ensure_loaded()
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._tools)

    def find(
        self,
        *,
        task: str | None = None,
        input_modality: Modality | str | None = None,
        output_modality: Modality | str | None = None,
        text: str | None = None,
    ) -> list[Tool]:
        """Tools matching every given criterion; ``text`` searches name, task and description."""
        result: Iterable[Tool] = self
        if task is not None:
            result = [t for t in result if t.spec.task == task]
        if input_modality is not None:
            m = Modality(input_modality)
            result = [t for t in result if any(p.modality is m for p in t.spec.inputs)]
        if output_modality is not None:
            m = Modality(output_modality)
            result = [t for t in result if any(p.modality is m for p in t.spec.outputs)]
        if text is not None:
            needle = text.lower()
            result = [t for t in result if needle in f"{t.name} {t.spec.task} {t.spec.description}".lower()]
        return list(result)

    def tasks(self) -> dict[str, list[Tool]]:
        out: dict[str, list[Tool]] = {}
        for t in self:
            out.setdefault(t.spec.task, []).append(t)
        return out


default_registry = ToolRegistry(autoload=True)


def get_tool(name: str) -> Tool:
    """The tool registered under ``name`` in the default registry."""
    return default_registry.get(name)


def list_tools() -> list[Tool]:
    return list(default_registry)
