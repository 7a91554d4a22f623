"""Plain text tools: fill a template, join texts, extract URLs (TaskBench "URL Extractor").

Templates use ``{name}`` placeholders only (``{{`` and ``}}`` for literal braces):
no attribute access or format specs, so a template sent by a remote user cannot
reach into Python objects the way ``str.format`` would.

>>> from orchestrator import get_tool
>>> get_tool("text.template").call({"texts": ["a cat"]}, {"template": "A photo of {0}."})["text"]
'A photo of a cat.'
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import ToolInputError
from orchestrator.tool import tool

from ._media import as_list, as_text

__all__ = ["JoinParams", "TemplateParams", "UrlParams", "extract_urls", "fill_template"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*|\d+)\}|[{}]")


def fill_template(template: str, values: dict[str, str], *, tool_name: str = "text.template") -> str:
    """Replace ``{name}`` placeholders from ``values``; unknown names and stray braces are errors."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = m.group(1)
        if name is None:
            raise ToolInputError(
                f"template has a stray {token!r} at position {m.start()}; write '{token * 2}' for a literal brace",
                tool=tool_name, param="template",
            )
        if name not in values:
            missing.append(name)
            return token
        return values[name]

    out = _PLACEHOLDER.sub(sub, template)
    if missing:
        raise ToolInputError(
            f"template placeholder(s) {sorted(set(missing))} have no value; available: {sorted(values)}",
            tool=tool_name, param="template",
        )
    return out


class TemplateParams(BaseModel):
    """``template`` with ``{0}``, ``{1}`` … for the connected texts in order, ``{text}`` for
    the first one, ``{all}`` for all of them joined by ``separator``, and any name in ``values``."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(default="{all}", max_length=100_000)
    values: dict[str, str] = Field(default_factory=dict, description="named constant values")
    separator: str = Field(default="\n", description="separator used by {all}")


@tool(
    "text.template",
    task="text-template",
    description="Fill a text template with the connected texts ({0}, {1} …, {text}, {all}) and named values.",
    inputs={"texts": {"modality": "text", "many": True, "optional": True}},
    outputs={"text": "text"},
    params=TemplateParams,
)
def template(texts: Any = None, *, params: TemplateParams) -> str:
    items = [as_text(t, tool="text.template", port="texts") for t in as_list(texts, tool="text.template", port="texts", minimum=0)]
    values: dict[str, str] = dict(params.values)
    values.update({str(i): t for i, t in enumerate(items)})
    if items:
        values.setdefault("text", items[0])
    values.setdefault("all", params.separator.join(items))
    return fill_template(params.template, values)


class JoinParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    separator: str = Field(default="\n", description="placed between texts")
    strip: bool = Field(default=True, description="strip surrounding whitespace of each text")
    skip_empty: bool = Field(default=True, description="leave out texts that are empty (after stripping)")
    prefix: str = ""
    suffix: str = ""


@tool(
    "text.join",
    task="text-join",
    description="Join several texts into one, in connection order, with a separator.",
    inputs={"texts": {"modality": "text", "many": True}},
    outputs={"text": "text"},
    params=JoinParams,
)
def join(texts: Any, *, params: JoinParams) -> str:
    items = [as_text(t, tool="text.join", port="texts") for t in as_list(texts, tool="text.join", port="texts")]
    if params.strip:
        items = [t.strip() for t in items]
    if params.skip_empty:
        items = [t for t in items if t]
    return params.prefix + params.separator.join(items) + params.suffix


# scheme URLs, plus bare www. hosts; stops at whitespace, quotes and angle brackets
_URL = re.compile(r"""(?:(?:https?|ftp)://|www\.)[^\s<>"'`{}|\\^\[\]]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


def extract_urls(text: str) -> list[str]:
    """URLs in ``text`` in order of appearance, without trailing punctuation (balanced parentheses kept)."""
    urls = []
    for m in _URL.finditer(text):
        url = m.group(0)
        while url and url[-1] in _TRAILING:
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        if url.lower().startswith("www."):
            url = "http://" + url
        if len(url) > len("http://"):
            urls.append(url)
    return urls


class UrlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    which: Literal["first", "all"] = Field(
        default="first", description="'first': the first URL (ready for a downloader); 'all': one per line"
    )
    unique: bool = Field(default=True, description="drop repeated URLs (with 'all')")


@tool(
    "text.extract_urls",
    task="url-extractor",
    description="Extract URLs from a text: the first one (default) or all of them, one per line.",
    inputs={"text": "text"},
    outputs={"text": {"modality": "text", "description": "URL(s)"}},
    params=UrlParams,
)
def url_extractor(text: Any, *, params: UrlParams) -> str:
    urls = extract_urls(as_text(text, tool="text.extract_urls", port="text"))
    if not urls:
        raise ToolInputError("no URL (http://, https://, ftp:// or www.) found in the text", tool="text.extract_urls", port="text")
    if params.which == "first":
        return urls[0]
    if params.unique:
        urls = list(dict.fromkeys(urls))
    return "\n".join(urls)
