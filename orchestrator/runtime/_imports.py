"""First-use imports of the model libraries: once, under their own lock, off the load locks.

Importing torch, transformers and diffusers takes seconds, and their lazy attributes
(``diffusers.AutoPipelineForText2Image``) import more on first access. These imports
run here, one at a time under :data:`IMPORT_LOCK` (the libraries' lazy modules are not
safe to resolve from two threads at once), before the model manager takes any load
lock, so a load never holds a lock while a library imports. :func:`preload` starts them
in a background thread as soon as a caller knows models will run (the CLI does, before
planning), taking them off the critical path::

    thread = preload(("torch", "diffusers:AutoPipelineForText2Image"))
    ...                                   # plan meanwhile
    ensure_imported(("torch",))           # returns at once, or waits for that import only
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterable

__all__ = ["IMPORT_LOCK", "ensure_imported", "preload"]

logger = logging.getLogger("orchestrator.runtime")

IMPORT_LOCK = threading.Lock()
"""Held while a library (or a lazy attribute of one) imports for the first time; never
held while a model loads or computes."""

_done: set[str] = set()


def _import_one(name: str) -> None:
    module_name, _, attr = name.partition(":")
    module = importlib.import_module(module_name)
    if attr:
        try:
            getattr(module, attr)
        except AttributeError as exc:
            raise ImportError(f"cannot import {attr!r} from {module_name!r}: {exc}", name=module_name) from exc


def ensure_imported(names: Iterable[str]) -> None:
    """Import each ``module`` or ``module:attribute`` (a lazy attribute) once per process.

    Names already imported return at once without the lock; an ImportError propagates
    (a missing attribute is one too; the caller reports it like any load failure).
    """
    todo = [n for n in names if n not in _done]
    if not todo:
        return
    with IMPORT_LOCK:
        for name in todo:
            if name in _done:  # imported by the thread we waited for
                continue
            _import_one(name)
            _done.add(name)


def preload(names: Iterable[str]) -> threading.Thread | None:
    """Import ``names`` in a daemon thread (modules that are not installed are skipped).

    Failures are logged, not raised: the real use reports them. Returns the thread,
    or None when there is nothing to import.
    """
    wanted = [n for n in names if n and n not in _done and importlib.util.find_spec(n.partition(":")[0].split(".")[0])]
    if not wanted:
        return None

    def work() -> None:
        for name in wanted:
            try:
                ensure_imported((name,))
            except Exception as exc:  # reported again, with context, where the module is used
                logger.debug("preloading %s failed: %s", name, exc)

    thread = threading.Thread(target=work, name="orch-preload", daemon=True)
    thread.start()
    return thread
