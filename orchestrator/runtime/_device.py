"""Device and dtype choice: cuda, then mps, then cpu; never a hard-coded ``cuda:N``."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from typing import Any

from orchestrator.errors import ConfigError

__all__ = ["default_memory_budget", "keep_freed_memory", "pick_device", "resolve_dtype"]

logger = logging.getLogger("orchestrator.runtime")

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def pick_device(setting: str | None = None) -> str:
    """The torch device to load models on.

    ``None`` or ``"auto"``: ``"cuda"`` when CUDA is available (the current device, so
    ``CUDA_VISIBLE_DEVICES`` decides which GPU), else ``"mps"``, else ``"cpu"``. An
    explicit setting (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is checked and
    returned as is; one that is not available raises :class:`ConfigError`.
    """
    import torch

    value = (setting or "auto").strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    kind, _, index = value.partition(":")
    if kind == "cpu":
        return "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {setting!r} was asked for but CUDA is not available", setting="device")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device {setting!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist",
                setting="device",
            )
        return value
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {setting!r} was asked for but MPS is not available", setting="device")
        return "mps"
    raise ConfigError(f"unknown device {setting!r}: use auto, cpu, cuda, cuda:N or mps", setting="device")


def resolve_dtype(name: str | None, device: str) -> Any:
    """The torch dtype for ``name`` on ``device``.

    ``None``/``"auto"``: float16 on cuda and mps, float32 on cpu. Half precision
    asked for on a CPU falls back to float32 (CPU kernels for fp16 are slow or
    missing), with a log line; bfloat16 is kept.
    """
    import torch

    kind = device.split(":")[0]
    key = (name or "auto").strip().lower()
    if key == "auto":
        return torch.float16 if kind in ("cuda", "mps") else torch.float32
    canonical = _DTYPES.get(key)
    if canonical is None:
        raise ConfigError(f"unknown dtype {name!r}: use auto, float32, float16 or bfloat16", setting="dtype")
    if canonical == "float16" and kind == "cpu":
        logger.info("float16 asked for on cpu: using float32")
        return torch.float32
    return getattr(torch, canonical)


def default_memory_budget(device: str) -> int:
    """Bytes models may occupy when no budget is set: 90% of the GPU, or half the RAM."""
    kind = device.split(":")[0]
    if kind == "cuda":
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory * 0.9)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return int(ram * 0.5)


HEAVY_LOCK = threading.RLock()
"""Held while loading a model or building a zoo checkpoint: meta-device initialisation in
diffusers and transformers is not thread-safe, so in one process loads happen one at a time
(inference still runs in parallel). The libraries' first-use imports happen before it is
taken, under their own lock (``_imports.IMPORT_LOCK``)."""


# glibc mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_BLOCK_MAX = 64 << 20
"""Largest block :func:`keep_freed_memory` moves from mmap to the heap."""
_kept: int | None = None
_kept_lock = threading.Lock()


def keep_freed_memory(nbytes: int) -> bool:
    """Have the C allocator keep up to ``nbytes`` of freed memory (process-wide); True if it took it.

    glibc hands blocks above its mmap threshold straight back to the OS when freed, and trims
    the heap above its trim threshold, so each model call faults its working set in again (a
    batched text-to-image call: thousands of minor page faults, each a zeroed page). Here the
    trim threshold becomes ``nbytes`` and blocks up to ``min(nbytes, HEAP_BLOCK_MAX)`` come from
    the heap. ``0``, or a C library without ``mallopt`` (macOS, Windows), leaves it as it is.
    """
    global _kept
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return False
    with _kept_lock:
        if _kept == nbytes:
            return True
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (musl has no mallopt in every build)
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = mallopt(_M_TRIM_THRESHOLD, nbytes) == 1
        ok = ok and mallopt(_M_MMAP_THRESHOLD, min(nbytes, HEAP_BLOCK_MAX)) == 1
        if ok:
            _kept = nbytes
        else:
            logger.debug("mallopt refused to keep %d freed bytes", nbytes)
        return ok
