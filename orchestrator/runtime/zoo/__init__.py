"""The tiny offline zoo: small, randomly initialized checkpoints built locally.

Every builder writes a real checkpoint with ``save_pretrained`` (configs, weights
and tokenizers, all made here from a small local vocabulary: no hub, no network),
so the decoders load it back through the same ``from_pretrained`` path that real
checkpoints use. Outputs are noise: the weights are random. The zoo exists so the
test suite and the offline quickstart exercise the real code path in seconds.

Checkpoints are cached on disk under ``$ORCHESTRATOR_ZOO_DIR`` (else
``<data_dir>/zoo``); a build runs under a file lock, into a temporary folder that is
renamed into place, so concurrent processes never see half a checkpoint::

    from orchestrator.runtime import zoo_path
    path = zoo_path("tiny-sd")          # builds on first use, then cached
    # AutoPipelineForText2Image.from_pretrained(path)

Adding a checkpoint: drop a ``_<family>.py`` module in this package with a
function decorated by :func:`zoo_model`; every ``_*.py`` module here is imported
when the package is, so the builder is listed.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ModelLoadError, ModelNotFound

__all__ = ["ZooModel", "build_zoo", "list_zoo", "zoo_dir", "zoo_model", "zoo_path"]

logger = logging.getLogger("orchestrator.runtime.zoo")

_MARKER = ".zoo.json"
ZOO_REVISION = "2"
"""Bumped when something every builder shares changes (revision 2: deterministic tokenizers)."""
Builder = Callable[[Path], None]


@dataclass(frozen=True)
class ZooModel:
    """A registered builder: ``fn(path)`` writes a checkpoint into the empty folder ``path``."""

    name: str
    fn: Builder
    version: str
    description: str


_REGISTRY: dict[str, ZooModel] = {}


def zoo_model(name: str, *, version: str = "1", description: str = "") -> Callable[[Builder], Builder]:
    """Register a builder under ``name``; bump ``version`` to make cached copies rebuild."""

    def wrap(fn: Builder) -> Builder:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"zoo model {name!r} is already registered by {existing.fn.__module__}")
        doc = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[name] = ZooModel(name=name, fn=fn, version=version, description=doc)
        return fn

    return wrap


def list_zoo() -> dict[str, ZooModel]:
    """Every registered builder by name."""
    return dict(sorted(_REGISTRY.items()))


def zoo_dir(root: str | Path | None = None) -> Path:
    """Where built checkpoints live: ``root``, ``$ORCHESTRATOR_ZOO_DIR`` or ``<data_dir>/zoo``."""
    if root is not None:
        return Path(root).expanduser().absolute()
    env = os.environ.get("ORCHESTRATOR_ZOO_DIR")
    if env:
        return Path(env).expanduser().absolute()
    from orchestrator.settings import get_settings

    return (Path(get_settings().data_dir).expanduser() / "zoo").absolute()


def _is_current(path: Path, entry: ZooModel) -> bool:
    try:
        info = json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (info.get("version"), info.get("revision"), info.get("name")) == (entry.version, ZOO_REVISION, entry.name)


def zoo_path(name: str, *, root: str | Path | None = None, force: bool = False) -> Path:
    """The folder of the zoo checkpoint ``name``, built on demand (under a file lock).

    Raises :class:`~orchestrator.errors.ModelNotFound` for an unknown name and
    :class:`~orchestrator.errors.ModelLoadError` when the builder fails.
    """
    from filelock import FileLock

    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(_REGISTRY) or "none"
        raise ModelNotFound(f"no tiny zoo checkpoint named {name!r} (known: {known})", model=f"zoo:{name}")
    base = zoo_dir(root)
    target = base / name
    if not force and _is_current(target, entry):
        return target
    base.mkdir(parents=True, exist_ok=True)
    from orchestrator.runtime._device import HEAVY_LOCK

    with HEAVY_LOCK, FileLock(str(base / f".{name}.lock")):
        if not force and _is_current(target, entry):  # another process built it while we waited
            return target
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
        try:
            entry.fn(tmp)
            seconds = time.perf_counter() - started
            (tmp / _MARKER).write_text(json.dumps({"name": name, "version": entry.version, "revision": ZOO_REVISION,
                                                     "seconds": round(seconds, 3)}))
            if target.exists():
                shutil.rmtree(target)
            tmp.chmod(0o755)
            os.replace(tmp, target)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelLoadError(f"building tiny zoo checkpoint {name!r} failed: {exc}", model=f"zoo:{name}") from exc
        logger.info("built zoo checkpoint %s in %.2fs at %s", name, seconds, target)
    return target


def build_zoo(names: Iterable[str] | None = None, root: str | Path | None = None, force: bool = False) -> dict[str, Path]:
    """Build (or find cached) checkpoints; all registered ones when ``names`` is None."""
    wanted = list(names) if names is not None else list(list_zoo())
    return {name: zoo_path(name, root=root, force=force) for name in wanted}


def _import_builders() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") and not info.name.startswith("__"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_builders()
