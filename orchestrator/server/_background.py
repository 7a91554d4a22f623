"""Chat UIs' background prompts (titles, tags, follow-ups …), answered as text without a run.

Open WebUI, LibreChat and LobeChat send housekeeping prompts to the model the user
picked; here each would become an agent run that may generate media. They are
recognised by the shape of the last user message (case-insensitive):

* Open WebUI: it starts with ``### Task:``; the kind comes from the task sentence
  (``title``, ``tags``, ``follow-up``, ``search queries``/``queries``, ``emoji``,
  ``autocompletion``). The answer is the JSON it asks for (``{"title": …}``,
  ``{"tags": […]}``, ``{"follow_ups": []}``, ``{"queries": []}``, ``{"text": ""}``).
* A title request: "generate/write/suggest … title for the conversation/chat …" or
  "summarize the user's conversation into a title" (LibreChat, LobeChat). The answer is the title alone
  (as JSON when the prompt asks for JSON).

The title is the conversation's first user words (at most six); tags name the media
the conversation talks about. Nothing is generated, so these answers cost nothing.

>>> from orchestrator.server.schemas import ChatMessage
>>> task = recognize([ChatMessage(role="user", content="### Task:\\nGenerate a concise title ... JSON format: "
...     '{ "title": "your concise title here" }\\n<chat_history>\\nUSER: draw a red fox at dawn\\n</chat_history>')])
>>> task.kind, answer(task)
('title', '{"title": "Draw a red fox at dawn"}')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ._history import text_of
from .schemas import ChatMessage

__all__ = ["BackgroundTask", "answer", "recognize"]

_OPEN_WEBUI_KINDS = (
    ("follow_ups", re.compile(r"follow[- ]?up", re.I)),
    ("tags", re.compile(r"\btags?\b", re.I)),
    ("title", re.compile(r"\btitle\b", re.I)),
    ("queries", re.compile(r"\bquer(y|ies)\b", re.I)),
    ("emoji", re.compile(r"\bemoji\b", re.I)),
    ("autocomplete", re.compile(r"autocomplet", re.I)),
)
_TITLE = re.compile(r"\b(generate|create|write|suggest|give|provide)\b[^.\n]{0,60}\btitle\b[^.\n]{0,40}"
                    r"\b(for|of|summari[sz]ing) (the|this) (conversation|chat|dialog(ue)?)\b|"
                    r"\b(conversation|chat)\b[^.\n]{0,60}\binto a (short |concise )?title\b", re.I)
_HISTORY_USER = re.compile(r"^\s*(?:user|human)\s*:\s*(.+)$", re.M | re.I)
_MEDIA_TAGS = (("Images", re.compile(r"\b(image|picture|photo|drawing|draw|paint)", re.I)),
               ("Audio", re.compile(r"\b(audio|sound|speech|voice|music|song)", re.I)),
               ("Video", re.compile(r"\b(video|clip|movie|animation)", re.I)))


@dataclass
class BackgroundTask:
    """A recognised housekeeping prompt: its kind, the conversation's first user text, JSON or not."""

    kind: str
    first_user_text: str
    conversation: str
    wants_json: bool


def _first_user_text(prompt: str, messages: list[ChatMessage]) -> str:
    m = _HISTORY_USER.search(prompt)
    if m:
        return m.group(1).strip()
    earlier = [text_of(msg) for msg in messages[:-1] if msg.role == "user" and text_of(msg).strip()]
    return earlier[0] if earlier else ""


def recognize(messages: list[ChatMessage]) -> BackgroundTask | None:
    """The background task the last user message is, or None for a real request."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        return None
    prompt = text_of(users[-1]).strip()
    kind = None
    if prompt.startswith("### Task:"):
        task_line = prompt.split("\n", 2)[:2]
        head = " ".join(task_line)
        kind = next((k for k, pattern in _OPEN_WEBUI_KINDS if pattern.search(head)), None)
        kind = kind or "other"
    elif _TITLE.search(prompt) or any(_TITLE.search(text_of(m)) for m in messages if m.role == "system"):
        kind = "title"
    if kind is None:
        return None
    return BackgroundTask(kind=kind, first_user_text=_first_user_text(prompt, messages), conversation=prompt,
                          wants_json="json" in prompt.lower())


def _title(text: str) -> str:
    words = re.sub(r"[^\w\s'-]", " ", text).split()[:6]
    title = " ".join(words) or "New chat"
    return title[:1].upper() + title[1:]


def answer(task: BackgroundTask) -> str:
    """The answer to a background task (JSON where the UI asks for JSON)."""
    if task.kind == "title":
        title = _title(task.first_user_text)
        return json.dumps({"title": title}, ensure_ascii=False) if task.wants_json else title
    if task.kind == "tags":
        tags = [name for name, pattern in _MEDIA_TAGS if pattern.search(task.conversation)] or ["General"]
        return json.dumps({"tags": tags})
    if task.kind == "follow_ups":
        return json.dumps({"follow_ups": []})
    if task.kind == "queries":
        return json.dumps({"queries": []})
    if task.kind == "emoji":
        return "💬"
    if task.kind == "autocomplete":
        return json.dumps({"text": ""})
    return json.dumps({}) if task.wants_json else ""
