"""Modality-signal spans (NExT-GPT / ModaVerse style) parsed out of a streaming LLM answer.

A chat model may write ``<image seed=3>a lighthouse at dusk</image>`` inside its
text. :class:`SpanParser` is fed the text deltas as they stream and emits, in
order, plain text pieces and each span *the moment its closing tag arrives*, so
the decoder can start while the model keeps talking.

Rules (documented in docs/agent.md):

* Known kinds: ``image``, ``audio``, ``music``, ``speech``, ``video`` (case-insensitive).
  Any other tag (``<b>``, ``<br/>``, ``a < b``) is plain text, untouched.
* Attributes: ``name=value``, ``name="a value"`` or ``name='a value'``.
* Nesting is not supported: inside an open span, tags of known kinds are dropped
  from the prompt (their inner text is kept); the first closing tag of the open
  kind closes the span. A closing tag outside any span is dropped.
* A span still open when the stream ends, or whose content grows past
  ``max_span_chars``, is not dispatched: its opening tag is dropped and its
  content becomes plain text.
* An empty span (``<image></image>``) is not dispatched and leaves no text.
* At most ``max_spans`` spans per message are dispatched; later ones become
  :class:`SpanOverLimit` items (the caller writes a note instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "SPAN_KINDS",
    "Span",
    "SpanIssue",
    "SpanOverLimit",
    "SpanParser",
    "TextPiece",
    "parse_spans",
    "render_ref",
]

SPAN_KINDS: dict[str, str] = {
    "image": "text-to-image",
    "audio": "text-to-audio",
    "music": "text-to-music",
    "speech": "text-to-speech",
    "video": "text-to-video",
}
"""Span kind -> the task it runs (``image`` with a ``source`` attribute runs ``image-to-image``)."""

_ATTR = re.compile(r"""([A-Za-z_][\w\-]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_TAG = re.compile(r"^<(/?)([A-Za-z][A-Za-z0-9_\-]*)((?:\s+[^<>]*)?)\s*(/?)>$", re.DOTALL)


@dataclass(frozen=True)
class TextPiece:
    """Plain text to show as is."""

    text: str


@dataclass(frozen=True)
class Span:
    """A closed span: ``kind`` (image, audio …), its prompt and attributes, ``index`` in the message."""

    index: int
    kind: str
    content: str
    attrs: dict[str, str] = field(default_factory=dict)
    raw: str = ""


@dataclass(frozen=True)
class SpanOverLimit:
    """A span past the per-message limit: not dispatched."""

    kind: str
    content: str
    limit: int


@dataclass(frozen=True)
class SpanIssue:
    """Something the parser fixed up (``kind``: nested, stray_close, unclosed, too_long, empty)."""

    kind: str
    detail: str


Item = TextPiece | Span | SpanOverLimit | SpanIssue


class SpanParser:
    """Incremental parser: ``feed(delta)`` and ``close()`` return the items completed so far.

    >>> p = SpanParser()
    >>> p.feed("Here: <ima") + p.feed("ge seed=3>a cat</image>!") + p.close()
    [TextPiece(text='Here: '), Span(index=0, kind='image', content='a cat', attrs={'seed': '3'}, raw='<image seed=3>a cat</image>'), TextPiece(text='!')]
    """

    def __init__(self, *, kinds: set[str] | None = None, max_spans: int = 4, max_tag_chars: int = 256,
                 max_span_chars: int = 4000) -> None:
        self.kinds = {k.lower() for k in (kinds or SPAN_KINDS)}
        self.max_spans = max_spans
        self.max_tag_chars = max_tag_chars
        self.max_span_chars = max_span_chars
        self._buf = ""  # undecided text (starts with "<" when a tag may be forming)
        self._open: tuple[str, dict[str, str], str] | None = None  # kind, attrs, raw opening tag
        self._content: list[str] = []
        self._raw: list[str] = []
        self.count = 0  # spans closed (dispatched or over the limit)
        self.dispatched = 0

    # ------------------------------------------------------------ public
    def feed(self, delta: str) -> list[Item]:
        self._buf += delta
        return self._drain(final=False)

    def close(self) -> list[Item]:
        out = self._drain(final=True)
        if self._open is not None:
            kind, _, raw = self._open
            text = "".join(self._content)
            out.append(SpanIssue("unclosed", f"<{kind}> was never closed; its text is kept as plain text"))
            if text:
                out.append(TextPiece(text))
            self._open = None
            self._content, self._raw = [], []
        return _merge(out)

    @property
    def in_span(self) -> bool:
        return self._open is not None

    # ------------------------------------------------------------ internals
    def _drain(self, *, final: bool) -> list[Item]:
        out: list[Item] = []
        while self._buf:
            lt = self._buf.find("<")
            if lt < 0:
                self._emit_text(self._buf, out)
                self._buf = ""
                break
            if lt > 0:
                self._emit_text(self._buf[:lt], out)
                self._buf = self._buf[lt:]
            gt = self._buf.find(">")
            nxt = self._buf.find("<", 1)
            if gt < 0 or (0 <= nxt < gt):
                # no complete tag yet: wait, unless it cannot become one of ours
                cut = nxt if nxt >= 0 else len(self._buf)
                head = self._buf[:cut]
                if nxt >= 0 or final or len(head) > self.max_tag_chars or not self._could_be_tag(head):
                    self._emit_text(head, out)
                    self._buf = self._buf[cut:]
                    continue
                break
            tag = self._buf[: gt + 1]
            self._buf = self._buf[gt + 1:]
            self._on_tag(tag, out)
        return _merge(out)

    def _could_be_tag(self, head: str) -> bool:
        m = re.match(r"^</?([A-Za-z][A-Za-z0-9_\-]*)?", head)
        if m is None or m.end() != len(head) and not head[m.end()].isspace():
            return head in ("<", "</")
        name = (m.group(1) or "").lower()
        if m.end() == len(head):  # still typing the name
            return any(k.startswith(name) for k in self.kinds)
        return name in self.kinds

    def _emit_text(self, text: str, out: list[Item]) -> None:
        if not text:
            return
        if self._open is None:
            out.append(TextPiece(text))
            return
        self._content.append(text)
        self._raw.append(text)
        if sum(len(c) for c in self._content) > self.max_span_chars:
            kind = self._open[0]
            out.append(SpanIssue("too_long", f"<{kind}> span over {self.max_span_chars} characters; kept as text"))
            out.append(TextPiece("".join(self._content)))
            self._open, self._content, self._raw = None, [], []

    def _on_tag(self, tag: str, out: list[Item]) -> None:
        m = _TAG.match(tag)
        name = m.group(2).lower() if m else ""
        if m is None or name not in self.kinds:
            self._emit_text(tag, out)
            return
        closing, attrs_text, selfclosing = m.group(1) == "/", m.group(3) or "", m.group(4) == "/"
        if self._open is None:
            if closing:
                out.append(SpanIssue("stray_close", f"closing tag {tag} outside any span dropped"))
                return
            attrs = {a.group(1).lower(): next(v for v in a.group(2, 3, 4) if v is not None)
                     for a in _ATTR.finditer(attrs_text)}
            if selfclosing:
                out.append(SpanIssue("empty", f"{tag} has no content; not dispatched"))
                return
            self._open = (name, attrs, tag)
            self._content, self._raw = [], [tag]
            return
        kind = self._open[0]
        if closing and name == kind:
            self._raw.append(tag)
            self._finish(out)
            return
        self._raw.append(tag)
        out.append(SpanIssue("nested", f"tag {tag} inside <{kind}> dropped (spans do not nest)"))

    def _finish(self, out: list[Item]) -> None:
        assert self._open is not None
        kind, attrs, _ = self._open
        content = "".join(self._content).strip()
        raw = "".join(self._raw)
        self._open, self._content, self._raw = None, [], []
        if not content:
            out.append(SpanIssue("empty", f"<{kind}> span has no content; not dispatched"))
            return
        self.count += 1
        if self.dispatched >= self.max_spans:
            out.append(SpanOverLimit(kind, content, self.max_spans))
            return
        out.append(Span(index=self.dispatched, kind=kind, content=content, attrs=attrs, raw=raw))
        self.dispatched += 1


def _merge(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if isinstance(item, TextPiece) and out and isinstance(out[-1], TextPiece):
            out[-1] = TextPiece(out[-1].text + item.text)
        elif not (isinstance(item, TextPiece) and not item.text):
            out.append(item)
    return out


def parse_spans(text: str, **kwargs: int) -> list[Item]:
    """Parse a complete message at once (same rules as streaming)."""
    parser = SpanParser(**kwargs)  # type: ignore[arg-type]
    return _merge(parser.feed(text) + parser.close())


def render_ref(kind: str, artifact_id: str | None = None, *, error: str | None = None) -> str:
    """The textual form a span takes in the final message.

    ``[image: sha256:<hex>]`` on success, ``[image failed: <reason>]`` on failure,
    ``[image not generated: <reason>]`` when it was not dispatched.
    """
    if artifact_id is not None:
        return f"[{kind}: {artifact_id}]"
    if error is not None and error.startswith("not generated:"):
        return f"[{kind} {error}]"
    return f"[{kind} failed: {error or 'unknown error'}]"
