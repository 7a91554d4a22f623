"""Internet search tools (TaskBench's Text, Image, Video Search and Image Search by Image).

The project ships no search engine. These tools are registered so that plans can
name a search step, and they run only where a search backend is configured; without
one they refuse at run time with a message saying how to configure it, while the
rest of the plan runs.

The backend seam is one small class with one method::

    from tools.search import SearchBackend, SearchHit

    class MyEngine(SearchBackend):
        def search(self, query, *, kind, limit):
            # kind: "text" | "image" | "video" | "similar-image"; for "similar-image"
            # the query is the PNG bytes of the image, else the query text
            return [SearchHit(url="https://example.org/a.png", title="A", snippet="...")]

    def make_backend() -> SearchBackend:   # ORCHESTRATOR_SEARCH_BACKEND=my_module:make_backend
        return MyEngine()

Set ``ORCHESTRATOR_SEARCH_BACKEND`` to ``module:attribute`` (a class, a factory or an
instance), or call :func:`set_search_backend` in-process. Text search returns the hits
as text (title, URL, snippet per hit); image and video search download the first hit
that is a usable file through the guarded fetch of ``tools.downloaders``.
"""

from __future__ import annotations

import importlib
import io
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.artifacts import Modality
from orchestrator.errors import ConfigError, DownloadError, ToolError
from orchestrator.tool import tool

from ._media import as_text, settings_of

__all__ = ["SearchBackend", "SearchHit", "SearchKind", "SearchParams", "get_search_backend", "set_search_backend"]

logger = logging.getLogger("orchestrator.tools.search")

SearchKind = Literal["text", "image", "video", "similar-image"]


@dataclass(frozen=True)
class SearchHit:
    """One result: where it is, and what the engine says about it."""

    url: str
    title: str = ""
    snippet: str = ""


class SearchBackend:
    """A search engine the search tools call. Implement :meth:`search`."""

    def search(self, query: str | bytes, *, kind: SearchKind, limit: int) -> list[SearchHit]:
        """Up to ``limit`` hits for ``query`` (text, or PNG bytes when ``kind`` is ``"similar-image"``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement search(query, *, kind, limit)")


_backend: SearchBackend | None = None
_lock = threading.Lock()


def set_search_backend(backend: SearchBackend | None) -> None:
    """Use ``backend`` for every search tool in this process (``None``: back to the setting)."""
    global _backend
    with _lock:
        _backend = backend


def get_search_backend(settings: Any = None) -> SearchBackend | None:
    """The in-process backend, else the one ``ORCHESTRATOR_SEARCH_BACKEND`` names, else ``None``."""
    if _backend is not None:
        return _backend
    spec = getattr(settings, "search_backend", None)
    if not spec:
        return None
    module, _, attr = str(spec).partition(":")
    if not module or not attr:
        raise ConfigError(f"ORCHESTRATOR_SEARCH_BACKEND={spec!r}: expected 'module:attribute'")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"ORCHESTRATOR_SEARCH_BACKEND={spec!r} cannot be loaded: {exc}") from exc
    backend = obj() if callable(obj) and not isinstance(obj, SearchBackend) else obj
    if not callable(getattr(backend, "search", None)):
        raise ConfigError(f"ORCHESTRATOR_SEARCH_BACKEND={spec!r} gave {type(backend).__name__}, which has no search()")
    return backend


class SearchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=5, ge=1, le=50, description="how many hits to ask for")


def _backend_for(tool_name: str, ctx: Any) -> SearchBackend:
    backend = get_search_backend(settings_of(ctx))
    if backend is None:
        raise ToolError(f"{tool_name} needs an internet search backend and none is configured: set "
                        "ORCHESTRATOR_SEARCH_BACKEND=module:factory to a tools.search.SearchBackend "
                        "(see docs/planner.md, 'Search backends')", tool=tool_name)
    return backend


def _hits(tool_name: str, backend: SearchBackend, query: str | bytes, kind: SearchKind, limit: int) -> list[SearchHit]:
    try:
        hits = list(backend.search(query, kind=kind, limit=limit))
    except ToolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's backend: translate whatever it raises
        raise ToolError(f"{tool_name}: the search backend failed: {exc}", tool=tool_name) from exc
    if not hits:
        raise ToolError(f"{tool_name}: the search backend found nothing for {str(query)[:80]!r}", tool=tool_name)
    return hits[:limit]


def _first_file(tool_name: str, hits: list[SearchHit], modality: Modality, ctx: Any) -> Any:
    from .downloaders import _download, DownloadParams

    errors = []
    for hit in hits:
        try:
            return _download(hit.url, modality, tool_name, DownloadParams(), ctx)
        except DownloadError as exc:
            errors.append(f"{hit.url}: {exc.message}")
    raise ToolError(f"{tool_name}: no hit could be downloaded as {modality.value} ({'; '.join(errors)[:400]})",
                    tool=tool_name)


_QUERY = {"text": {"modality": "text", "description": "what to search for"}}


@tool("search.text", task="text-search", description="Search the internet for a text query; the hits as text "
      "(title, URL, snippet). Needs a configured search backend.", inputs=_QUERY, outputs={"text": "text"},
      params=SearchParams, cacheable=False)
def text_search(text: Any, *, params: SearchParams, ctx: Any = None) -> str:
    query = as_text(text, tool="search.text", port="text")
    hits = _hits("search.text", _backend_for("search.text", ctx), query, "text", params.limit)
    return "\n\n".join("\n".join(x for x in (h.title, h.url, h.snippet) if x) for h in hits)


@tool("search.image", task="image-search", description="Search the internet for images matching a text query; "
      "the first hit that downloads. Needs a configured search backend.", inputs=_QUERY, outputs={"image": "image"},
      params=SearchParams, cacheable=False)
def image_search(text: Any, *, params: SearchParams, ctx: Any = None) -> Any:
    query = as_text(text, tool="search.image", port="text")
    hits = _hits("search.image", _backend_for("search.image", ctx), query, "image", params.limit)
    return _first_file("search.image", hits, Modality.IMAGE, ctx)


@tool("search.video", task="video-search", description="Search the internet for videos matching a text query; "
      "the first hit that downloads. Needs a configured search backend.", inputs=_QUERY, outputs={"video": "video"},
      params=SearchParams, cacheable=False)
def video_search(text: Any, *, params: SearchParams, ctx: Any = None) -> Any:
    query = as_text(text, tool="search.video", port="text")
    hits = _hits("search.video", _backend_for("search.video", ctx), query, "video", params.limit)
    return _first_file("search.video", hits, Modality.VIDEO, ctx)


@tool("search.similar_image", task="image-search-by-image", description="Search the internet for images similar "
      "to an image (reverse image search); the first hit that downloads. Needs a configured search backend.",
      inputs={"image": "image"}, outputs={"image": "image"}, params=SearchParams, cacheable=False)
def similar_image_search(image: Any, *, params: SearchParams, ctx: Any = None) -> Any:
    backend = _backend_for("search.similar_image", ctx)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    hits = _hits("search.similar_image", backend, buf.getvalue(), "similar-image", params.limit)
    return _first_file("search.similar_image", hits, Modality.IMAGE, ctx)
