"""The model manager: every loaded model, loaded once, kept under a memory budget.

Models are keyed by (model id or path, backend, device, dtype). The first request
for a key loads it under a per-key lock (concurrent first requests wait for that
one load); later requests are hits. Resident models are sized from their
parameters and buffers; when a load would not fit the budget, the least recently
used models that nobody is using are evicted. Loads, hits and evictions are kept
as stats and emitted as :class:`ModelEvent` to subscribers::

    manager = ModelManager(device="cpu", memory_budget_bytes=2 << 30)
    with manager.use("zoo:tiny-sd", "diffusers.text2img", task="text-to-image") as pipe:
        image = pipe("a lighthouse", num_inference_steps=2).images[0]
    manager.stats()["loads"]            # 1

A model reference is checked before anything heavy happens: ``zoo:<name>`` builds or
finds the zoo checkpoint, a local path must exist, a hub id must be in the local
cache unless the hub is reachable; otherwise :class:`ModelNotFound` names the task
and model.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestrator.errors import ConfigError, ModelError, ModelLoadError, ModelNotFound

from ._backends import LOAD_OPTIONS, check_backend
from ._device import HEAVY_LOCK, default_memory_budget, keep_freed_memory, pick_device, resolve_dtype
from ._imports import ensure_imported
from ._sources import resolve_source
from .profiles import ModelChoice

__all__ = ["ModelEvent", "ModelKey", "ModelManager", "get_model_manager", "resolve_model", "set_model_manager"]

logger = logging.getLogger("orchestrator.runtime")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack")


# ------------------------------------------------------------------ resolution


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


_hub_probe: dict[str, tuple[float, bool]] = {}
_hub_probe_lock = threading.Lock()



def hub_reachable(timeout: float = 1.5, ttl: float = 60.0) -> bool:
    """Whether the Hugging Face hub can be used: not offline by setting and answering on its port."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return False
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
        endpoint = constants.ENDPOINT
    except Exception:  # pragma: no cover - hub client missing or changed
        endpoint = "https://huggingface.co"
    with _hub_probe_lock:
        cached = _hub_probe.get(endpoint)
        if cached and time.monotonic() - cached[0] < ttl:
            return cached[1]
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    with _hub_probe_lock:
        _hub_probe[endpoint] = (time.monotonic(), ok)
    return ok


def _hub_cached(repo_id: str) -> str | None:
    """The local snapshot folder of a cached hub repo, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in ("model_index.json", "config.json"):
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return str(Path(found).parent)
    return None


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", ".\\")) or "\\" in ref or ref.count("/") > 1 or bool(re.match(r"^[A-Za-z]:", ref))


def resolve_model(ref: str, *, task: str | None = None) -> str:
    """Turn a model reference into what ``from_pretrained`` takes, or raise ModelNotFound.

    ``zoo:<name>`` -> the built zoo folder; ``package:…`` / ``tesseract:…`` (and other
    registered schemes) -> the file they name; an existing path -> its absolute path; a
    hub id -> itself, if it is in the local cache or the hub is reachable.
    """
    ref = ref.strip()
    if ref.startswith("zoo:"):
        from .zoo import zoo_path

        try:
            return str(zoo_path(ref[4:]))
        except ModelError as exc:
            exc.context.setdefault("task", task)
            exc.task = task
            raise
    sourced = resolve_source(ref, task=task)  # package:…, tesseract:… (see _sources)
    if sourced is not None:
        return sourced
    path = Path(ref).expanduser()
    if _looks_like_path(ref):
        if not path.exists():
            raise ModelNotFound(f"local model path {ref!r} does not exist", model=ref, task=task)
        return str(path.resolve())
    if path.exists():
        return str(path.resolve())
    if not _HUB_ID_OK(ref):
        raise ModelNotFound(
            f"{ref!r} is neither an existing local path nor a hub id like 'org/name'", model=ref, task=task
        )
    if _hub_cached(ref) is None and not hub_reachable():
        raise ModelNotFound(
            f"model {ref!r} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1); download it on a machine with network, or point the task "
            "at a local folder",
            model=ref, task=task,
        )
    return ref


def _HUB_ID_OK(ref: str) -> bool:  # noqa: N802 - reads as a predicate on the pattern
    return bool(_HUB_ID.match(ref)) and ".." not in ref


def _estimate_bytes(source: str) -> int:
    """Bytes of weight files on disk (a local folder or a cached hub snapshot); 0 when unknown."""
    folder = Path(source)
    if not folder.exists():
        cached = _hub_cached(source)
        if cached is None:
            return 0
        folder = Path(cached)
    if folder.is_file():
        return folder.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(_WEIGHT_SUFFIXES):
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    pass
    return total


# ------------------------------------------------------------------ sizing


def _modules(obj: Any, seen: set[int]) -> Iterator[Any]:
    import torch

    if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        yield obj
        return
    components = getattr(obj, "components", None)  # a diffusers pipeline
    if isinstance(components, Mapping):
        for value in components.values():
            yield from _modules(value, seen)
        return
    if isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _modules(value, seen)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _modules(value, seen)
    else:
        for attr in ("model", "lm", "compression_model"):  # wrappers (audiocraft, bundles)
            inner = getattr(obj, attr, None)
            if inner is not None:
                yield from _modules(inner, seen)


def measure_bytes(obj: Any, *, largest_only: bool = False) -> int:
    """Bytes of the parameters and buffers of every torch module in ``obj`` (shared tensors once).

    ``largest_only``: the biggest module alone (what CPU offload keeps on the GPU).
    An object that is not torch (a CTranslate2 model, a soundfont) may declare its
    size as an integer ``resident_bytes`` attribute.
    """
    declared = getattr(obj, "resident_bytes", None)
    if isinstance(declared, int):
        return declared
    sizes = []
    tensors: set[int] = set()
    for module in _modules(obj, set()):
        size = 0
        for t in [*module.parameters(), *module.buffers()]:
            key = t.data_ptr() if t.device.type != "meta" else id(t)
            if key in tensors:
                continue
            tensors.add(key)
            size += t.numel() * t.element_size()
        sizes.append(size)
    if not sizes:
        return 0
    return max(sizes) if largest_only else sum(sizes)


# ------------------------------------------------------------------ manager


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model."""

    model: str
    backend: str
    device: str
    dtype: str
    load_options: str = ""

    def __str__(self) -> str:
        extra = f" {self.load_options}" if self.load_options else ""
        return f"{self.model} [{self.backend} {self.device} {self.dtype}{extra}]"


@dataclass(frozen=True)
class ModelEvent:
    """Something the manager did: ``load_started``, ``loaded``, ``load_failed``, ``hit``, ``evicted``, ``over_budget``."""

    type: str
    key: ModelKey
    bytes: int = 0
    seconds: float = 0.0
    reason: str = ""
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type, "model": self.key.model, "backend": self.key.backend, "device": self.key.device,
            "dtype": self.key.dtype, "bytes": self.bytes, "seconds": round(self.seconds, 4), "reason": self.reason,
            "at": self.at,
        }


@dataclass
class _Resident:
    key: ModelKey
    obj: Any
    bytes: int
    load_seconds: float
    task: str | None
    hits: int = 0
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)


class ModelManager:
    """Owns loaded models: lazy, once per key, LRU-evicted under a memory budget.

    ``device`` None picks cuda, then mps, then cpu. ``dtype`` None means float16 on
    GPU and float32 on CPU. ``memory_budget_bytes`` None means 90% of the GPU or half
    the RAM. ``cpu_offload`` uses diffusers' model CPU offload on CUDA (then only the
    largest component counts against the budget). ``on_event`` is called with every
    :class:`ModelEvent` (also kept in :attr:`events`, the last ``max_events``). On CPU,
    ``heap_keep_bytes`` of freed memory stay in the process between calls (None: the
    ``cpu_heap_keep_bytes`` setting; see :func:`keep_freed_memory`).
    """

    def __init__(
        self,
        *,
        device: str | None = None,
        dtype: str | None = None,
        memory_budget_bytes: int | None = None,
        cpu_offload: bool = False,
        on_event: Callable[[ModelEvent], None] | None = None,
        max_events: int = 1000,
        cpu_threads: int | None = None,
        heap_keep_bytes: int | None = None,
    ) -> None:
        self.device = pick_device(device)
        if self.device.startswith("cpu"):
            if heap_keep_bytes is None:
                from orchestrator.settings import get_settings

                heap_keep_bytes = get_settings().cpu_heap_keep_bytes
            if not 0 <= heap_keep_bytes < 1 << 31:
                raise ConfigError(f"heap_keep_bytes={heap_keep_bytes}: expected 0 to {(1 << 31) - 1} (a C int)")
            keep_freed_memory(heap_keep_bytes)
        self.cpu_threads = cpu_threads  # None: torch's own count (OMP_NUM_THREADS, or every core), read on first use
        self._computing = 0  # leases in their compute block now, sharing cpu_threads
        self.dtype = dtype
        self.memory_budget_bytes = int(memory_budget_bytes) if memory_budget_bytes else default_memory_budget(self.device)
        self.cpu_offload = cpu_offload
        self.events: deque[ModelEvent] = deque(maxlen=max_events)
        self._listeners: list[Callable[[ModelEvent], None]] = [on_event] if on_event else []
        self._lock = threading.RLock()
        self._entries: OrderedDict[ModelKey, _Resident] = OrderedDict()
        self._loading: dict[ModelKey, threading.Lock] = {}
        self._resolved: dict[tuple[str, str, str | None, str | None, str], ModelKey] = {}  # request -> key, while resident
        self._counts = {"loads": 0, "hits": 0, "evictions": 0, "failures": 0}
        self._load_seconds = 0.0

    def __repr__(self) -> str:
        return f"ModelManager(device={self.device!r}, budget={self.memory_budget_bytes}, resident={len(self._entries)})"

    # -------------------------------------------------- events
    def subscribe(self, fn: Callable[[ModelEvent], None]) -> Callable[[], None]:
        """Call ``fn`` with every event; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return unsubscribe

    def _emit(self, event: ModelEvent) -> None:
        self.events.append(event)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # a listener must not break loading
                logger.exception("model event listener failed")

    # -------------------------------------------------- keys
    def key(
        self, model: str | ModelChoice, backend: str, *, task: str | None = None, dtype: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ModelKey:
        """The cache key for a request (resolves the model reference; may raise ModelNotFound).

        A request whose model is resident is answered from memory: its reference was checked
        when it loaded (no path or hub lookups per call); after an eviction it is checked again.
        """
        ref, task, dtype, options = self._unpack(model, task, dtype, options)
        load = {k: options[k] for k in LOAD_OPTIONS if options.get(k) is not None}
        load_json = json.dumps(load, sort_keys=True) if load else ""
        request = (ref.strip(), backend, task, dtype or self.dtype, load_json)
        known = self._resolved.get(request)
        if known is not None and known in self._entries:  # resident: resolved when it loaded
            return known
        source = resolve_model(ref, task=task)
        torch_dtype = resolve_dtype(dtype or self.dtype, self.device)
        key = ModelKey(source, backend, self.device, str(torch_dtype).replace("torch.", ""), load_json)
        with self._lock:
            self._resolved[request] = key
            if len(self._resolved) > 64 + 4 * len(self._entries):  # lookups of models never (or no longer) loaded
                for stale in [r for r, k in self._resolved.items() if k not in self._entries]:
                    del self._resolved[stale]
        return key

    def _forget(self, keys: list[ModelKey]) -> None:
        """Drop the resolved requests of evicted keys (their references are checked again next time)."""
        gone = set(keys)
        with self._lock:
            for request in [r for r, k in self._resolved.items() if k in gone]:
                del self._resolved[request]

    @staticmethod
    def _unpack(model: str | ModelChoice, task: str | None, dtype: str | None,
                options: Mapping[str, Any] | None) -> tuple[str, str | None, str | None, Mapping[str, Any]]:
        if isinstance(model, ModelChoice):
            return model.model, task or model.task, dtype or model.dtype, options if options is not None else model.options
        return model, task, dtype, options or {}

    # -------------------------------------------------- loading
    def load(
        self, model: str | ModelChoice, backend: str, *, task: str | None = None, dtype: str | None = None,
        options: Mapping[str, Any] | None = None, loader: Callable[..., Any] | None = None,
    ) -> Any:
        """The loaded model for the request, loading it first if needed."""
        return self._entry(model, backend, task, dtype, options, loader, lease=False).obj

    @contextlib.contextmanager
    def use(
        self, model: str | ModelChoice, backend: str, *, task: str | None = None, dtype: str | None = None,
        options: Mapping[str, Any] | None = None, loader: Callable[..., Any] | None = None, exclusive: bool = True,
    ) -> Iterator[Any]:
        """Lease a model for a block: it is not evicted while leased. ``exclusive`` also
        holds the model's lock, since pipelines keep per-call state (scheduler steps)."""
        entry = self._entry(model, backend, task, dtype, options, loader, lease=True)
        try:
            with entry.lock if exclusive else contextlib.nullcontext(), self.share_cpu_threads():
                yield entry.obj
        finally:
            with self._lock:
                entry.in_use -= 1
                entry.last_used = time.monotonic()
                over = sum(e.bytes for e in self._entries.values()) > self.memory_budget_bytes
            if over:  # a lease kept us over budget: evict now that it ended
                self._make_room(0, keep=entry.key)

    @contextlib.contextmanager
    def share_cpu_threads(self, *, device: str | None = None) -> Iterator[int]:
        """On CPU, divide ``cpu_threads`` among the model calls running at once: two concurrent
        calls each starting one torch thread per core made both slower (oversubscription).

        Leases (:meth:`use`) hold a share; a model computing outside the manager (the offline
        planner's encoder) takes one around its call, naming its ``device`` (default: the manager's).
        """
        if not (device or self.device).startswith("cpu"):
            yield self.cpu_threads or _cpu_count()
            return
        import torch

        with self._lock:
            if self.cpu_threads is None:
                self.cpu_threads = torch.get_num_threads()
            self._computing += 1
            share = max(1, self.cpu_threads // self._computing)
            torch.set_num_threads(share)
        try:
            yield share
        finally:
            with self._lock:
                self._computing -= 1
                torch.set_num_threads(max(1, (self.cpu_threads or 1) // max(1, self._computing)))

    def _entry(self, model: str | ModelChoice, backend: str, task: str | None, dtype: str | None,
               options: Mapping[str, Any] | None, loader: Callable[..., Any] | None, *, lease: bool) -> _Resident:
        ref, task, dtype, options = self._unpack(model, task, dtype, options)
        if loader is None:
            check_backend(backend, model=ref, task=task)
        key = self.key(ref, backend, task=task, dtype=dtype, options=options)
        hit = self._hit(key, lease)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._hit(key, lease)  # loaded by the request we waited for
            if hit is not None:
                return hit
            entry = self._load(key, ref, task, options, loader)
            with self._lock:
                self._entries[key] = entry
                if lease:
                    entry.in_use += 1
                self._loading.pop(key, None)
        self._make_room(0, keep=key)
        return entry

    def _hit(self, key: ModelKey, lease: bool) -> _Resident | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.hits += 1
            entry.last_used = time.monotonic()
            if lease:
                entry.in_use += 1
            self._entries.move_to_end(key)
            self._counts["hits"] += 1
        self._emit(ModelEvent("hit", key, entry.bytes))
        return entry

    def _load(self, key: ModelKey, ref: str, task: str | None, options: Mapping[str, Any],
              loader: Callable[..., Any] | None) -> _Resident:
        backend = None if loader is not None else check_backend(key.backend, model=ref, task=task)
        try:  # first-use imports under the import lock only: no load lock is held across them
            ensure_imported(("torch", *(backend.imports if backend else ())))
        except ImportError as exc:
            self._failed(key, str(exc))
            raise _translate(exc, ref, task, key.backend) from exc
        if backend is not None and backend.imports_of is not None:
            try:  # a checkpoint's own classes; one that cannot import is the loader's to report
                ensure_imported(backend.imports_of(key.model))
            except ImportError as exc:
                logger.debug("importing the classes of %s failed: %s", key.model, exc)
        import torch

        fn = loader or backend.loader  # type: ignore[union-attr]
        self._make_room(_estimate_bytes(key.model), keep=key)
        self._emit(ModelEvent("load_started", key))
        logger.info("loading %s for task %s", key, task)
        offload = self.cpu_offload and self.device.startswith("cuda")
        started = time.perf_counter()
        try:
            with HEAVY_LOCK:
                obj = fn(key.model, device=self.device, dtype=getattr(torch, key.dtype), offload=offload,
                         options=dict(options))
        except ModelError:
            self._failed(key)
            raise
        except Exception as exc:
            self._failed(key, str(exc))
            raise _translate(exc, ref, task, key.backend) from exc
        seconds = time.perf_counter() - started
        size = measure_bytes(obj, largest_only=offload)
        with self._lock:
            self._counts["loads"] += 1
            self._load_seconds += seconds
        logger.info("loaded %s in %.2fs (%.1f MB)", key, seconds, size / 1e6)
        self._emit(ModelEvent("loaded", key, size, seconds))
        return _Resident(key=key, obj=obj, bytes=size, load_seconds=seconds, task=task)

    def _failed(self, key: ModelKey, reason: str = "") -> None:
        with self._lock:
            self._counts["failures"] += 1
            self._loading.pop(key, None)
        self._emit(ModelEvent("load_failed", key, reason=reason[:500]))

    # -------------------------------------------------- budget
    def _make_room(self, needed: int, *, keep: ModelKey) -> None:
        """Evict least recently used, unleased models until ``needed`` more bytes fit."""
        evicted: list[_Resident] = []
        with self._lock:
            used = sum(e.bytes for e in self._entries.values())
            for key in list(self._entries):
                if used + needed <= self.memory_budget_bytes:
                    break
                entry = self._entries[key]
                if key == keep or entry.in_use > 0:
                    continue
                del self._entries[key]
                used -= entry.bytes
                evicted.append(entry)
                self._counts["evictions"] += 1
            over = used + needed > self.memory_budget_bytes
        self._forget([entry.key for entry in evicted])
        for entry in evicted:
            logger.info("evicted %s (%.1f MB, least recently used)", entry.key, entry.bytes / 1e6)
            self._emit(ModelEvent("evicted", entry.key, entry.bytes, reason="lru"))
        if over and needed == 0:
            logger.warning("resident models use %d bytes, over the %d-byte budget (the rest is in use)",
                           used, self.memory_budget_bytes)
            self._emit(ModelEvent("over_budget", keep, used, reason="in use or too large for the budget"))
        if evicted:
            del evicted
            self._release_memory()

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def evict(self, model: str | ModelKey | None = None) -> int:
        """Drop resident models (all, one key, or every key of a model path/id); returns how many."""
        with self._lock:
            if model is None:
                keys = list(self._entries)
            elif isinstance(model, ModelKey):
                keys = [model] if model in self._entries else []
            else:
                keys = [k for k in self._entries if model in (k.model, _safe_resolve(model))]
            dropped = [self._entries.pop(k) for k in keys]
            self._counts["evictions"] += len(dropped)
        self._forget(keys)
        for entry in dropped:
            self._emit(ModelEvent("evicted", entry.key, entry.bytes, reason="requested"))
        if dropped:
            self._release_memory()
        return len(dropped)

    clear = evict

    # -------------------------------------------------- observability
    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.bytes for e in self._entries.values())

    def resident(self) -> list[dict[str, Any]]:
        """Resident models, least recently used first."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "model": e.key.model, "backend": e.key.backend, "device": e.key.device, "dtype": e.key.dtype,
                    "task": e.task, "bytes": e.bytes, "load_seconds": round(e.load_seconds, 4), "hits": e.hits,
                    "in_use": e.in_use, "idle_seconds": round(now - e.last_used, 3),
                }
                for e in self._entries.values()
            ]

    def stats(self) -> dict[str, Any]:
        """Counters (loads, load seconds, hits, evictions, failures) and resident models with sizes."""
        resident = self.resident()
        with self._lock:
            return {
                "device": self.device,
                "budget_bytes": self.memory_budget_bytes,
                "used_bytes": sum(r["bytes"] for r in resident),
                **self._counts,
                "load_seconds": round(self._load_seconds, 4),
                "resident": resident,
            }


def _safe_resolve(ref: str) -> str:
    try:
        return resolve_model(ref)
    except ModelError:
        return ref


def _translate(exc: Exception, ref: str, task: str | None, backend: str) -> ModelError:
    """A loader's exception as ModelNotFound (no such repo/file) or ModelLoadError."""
    name = type(exc).__name__
    text = str(exc)
    not_found = name in {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError", "EntryNotFoundError",
                         "LocalEntryNotFoundError", "OfflineModeIsEnabled"} or isinstance(exc, FileNotFoundError) or (
        isinstance(exc, OSError) and any(s in text for s in ("is not a valid model identifier", "does not appear to have",
                                                              "Can't load", "couldn't connect", "not found")))
    if not_found:
        return ModelNotFound(f"cannot load model {ref!r}: {text.splitlines()[0] if text else name}",
                             model=ref, task=task, backend=backend)
    return ModelLoadError(f"loading model {ref!r} failed: {name}: {text[:300]}", model=ref, task=task, backend=backend)


# ------------------------------------------------------------------ process default

_default: ModelManager | None = None
_default_lock = threading.Lock()


def _cpu_count() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def cpu_share() -> Iterator[int]:
    """The CPU threads a computation outside the manager (not torch's) may use now: its share of the
    process-wide manager's budget (:meth:`ModelManager.share_cpu_threads`) when that manager is
    built, else every core. It never builds the manager, which would import torch."""
    manager = _default
    if manager is None:
        yield _cpu_count()
        return
    with manager.share_cpu_threads(device="cpu") as share:
        yield share


def get_model_manager() -> ModelManager:
    """The process-wide manager, built from the settings on first use."""
    global _default
    if _default is not None:
        return _default
    from orchestrator.settings import get_settings

    s = get_settings()
    # built outside the lock: picking the device imports torch (seconds), and a thread that
    # only needs the manager a moment later should not wait on the lock for that
    manager = ModelManager(device=s.device, dtype=s.dtype, memory_budget_bytes=s.memory_budget_bytes,
                           cpu_offload=s.cpu_offload, cpu_threads=s.torch_threads,
                           heap_keep_bytes=s.cpu_heap_keep_bytes)
    with _default_lock:
        if _default is None:
            _default = manager
        return _default


def set_model_manager(manager: ModelManager | None) -> ModelManager | None:
    """Replace the process-wide manager (None: rebuild from settings on next use); returns the old one."""
    global _default
    with _default_lock:
        old, _default = _default, manager
    return old
