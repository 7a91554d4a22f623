"""The model runtime: device choice, profiles, the model manager and the tiny zoo.

- :func:`pick_device` - cuda, then mps, then cpu (or the ``device`` setting).
- :class:`Profile` / :func:`get_profile` - which tool and model serve each task (TOML data).
- :class:`ModelManager` / :func:`get_model_manager` - loads each model once, keeps it
  under a memory budget, evicts the least recently used.
- :func:`zoo_path` / :func:`build_zoo` - tiny random checkpoints built offline.
- :func:`register_model_source` - ``scheme:name`` model references (``package:``,
  ``tesseract:``) for real weights shipped by installed packages.

>>> from orchestrator.runtime import get_profile
>>> [c.tool for c in get_profile("tiny").candidates("text-to-speech")]
['speech.espeak', 'speech.synthesize']
"""

from __future__ import annotations

from ._backends import Backend, ModelBundle, check_backend, get_backend, list_backends, register_backend
from ._device import default_memory_budget, keep_freed_memory, pick_device, resolve_dtype
from ._manager import (
    ModelEvent,
    ModelKey,
    ModelManager,
    cpu_share,
    get_model_manager,
    hub_reachable,
    measure_bytes,
    resolve_model,
    set_model_manager,
)
from ._sources import list_model_sources, register_model_source, resolve_source, tesseract_binary
from .profiles import ModelChoice, Profile, get_profile, load_profile
from .zoo import ZooModel, build_zoo, list_zoo, zoo_dir, zoo_model, zoo_path

__all__ = [
    "Backend",
    "ModelBundle",
    "ModelChoice",
    "ModelEvent",
    "ModelKey",
    "ModelManager",
    "Profile",
    "ZooModel",
    "build_zoo",
    "check_backend",
    "cpu_share",
    "default_memory_budget",
    "get_backend",
    "get_model_manager",
    "get_profile",
    "hub_reachable",
    "keep_freed_memory",
    "list_backends",
    "list_model_sources",
    "list_zoo",
    "load_profile",
    "measure_bytes",
    "pick_device",
    "register_backend",
    "register_model_source",
    "resolve_dtype",
    "resolve_model",
    "resolve_source",
    "set_model_manager",
    "tesseract_binary",
    "zoo_dir",
    "zoo_model",
    "zoo_path",
]
