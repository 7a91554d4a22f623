"""A chat client's ``messages`` -> what the agent takes: the last user turn, its media, and a session.

Chat UIs send the whole conversation with every request, and that history is the
source of truth (a session id, when there is one, is per person, not per
conversation). So the earlier turns are written into a fresh chat session of the
agent's memory before the run: their text, the media users attached (inline
``data:`` images and ``input_audio``), and every artifact an earlier answer linked
(``…/v1/artifacts/sha256:…``, signed or not) resolved back to the stored artifact.
The agent then sees "the previous image" as it would in a session it kept itself.

>>> conv = parse_messages([ChatMessage(role="user", content="hi")], max_media=8)
>>> conv.text, conv.earlier
('hi', [])
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from orchestrator.artifacts import ArtifactRef, Modality
from orchestrator.errors import ArtifactNotFound, OrchestratorError, WorkflowInputError

from ._inputs import resolve_input
from ._state import ServerState
from .schemas import ChatMessage, InputValue

__all__ = ["Conversation", "Turn", "forget_session", "media_values", "parse_messages", "seed_session", "text_of"]

logger = logging.getLogger("orchestrator.server.history")

_LINK = re.compile(r"(!?\[[^\]]*\]\()?(?:https?://[^\s()]*?)?/v1/artifacts/(sha256:[0-9a-f]{64}|[0-9a-f]{64})"
                   r"(?:\?[^\s()]*)?(\))?")
_AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "webm", "m4a", "aac", "opus", "pcm16"}


@dataclass
class Turn:
    """One earlier message: its text (artifact links taken out) and what it carried."""

    role: str
    text: str
    media: list[InputValue] = field(default_factory=list)
    artifact_ids: list[str] = field(default_factory=list)


@dataclass
class Conversation:
    """The last user message (what the run is about) and the turns before it."""

    text: str
    media: list[InputValue]
    earlier: list[Turn]


def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}]
    return list(message.content)


def text_of(message: ChatMessage) -> str:
    """The text parts of a message, joined by newlines."""
    return "\n".join(str(p.get("text", "")) for p in _parts(message) if p.get("type") in ("text", "input_text"))


_URL_PARTS = {"image_url": "image", "audio_url": "audio", "video_url": "video"}


def media_values(message: ChatMessage, limit: int | None = None) -> list[InputValue]:
    """The media parts of a message as input values.

    ``image_url`` (OpenAI), ``audio_url`` and ``video_url`` parts carry a ``data:``
    URL, an http(s) URL, or a link to one of this server's artifacts (taken by id, not
    fetched); ``input_audio`` parts carry base64 audio.
    """
    values: list[InputValue] = []
    for part in _parts(message):
        kind = part.get("type")
        if kind in _URL_PARTS:
            spec = part.get(kind)
            url = spec.get("url") if isinstance(spec, dict) else spec
            if not isinstance(url, str) or not url:
                raise WorkflowInputError(f"an {kind} part needs {kind}.url")
            linked = _artifact_links(url)[1] if not url.startswith("data:") else []
            if linked:
                values.append(InputValue(artifact_id=linked[0]))
            else:
                values.append(InputValue(url=url, modality=_URL_PARTS[kind]))
        elif kind == "input_audio":
            spec = part.get("input_audio") or {}
            data, fmt = spec.get("data"), str(spec.get("format", "wav")).lower()
            if not isinstance(data, str) or not data:
                raise WorkflowInputError("an input_audio part needs input_audio.data (base64)")
            if fmt not in _AUDIO_FORMATS:
                raise WorkflowInputError(f"input_audio format {fmt!r} is not supported; use one of {sorted(_AUDIO_FORMATS)}")
            values.append(InputValue(base64=data, modality="audio"))
        elif kind in ("text", "input_text", None):
            continue
        else:
            raise WorkflowInputError(f"content part type {kind!r} is not supported "
                                     "(text, image_url, audio_url, video_url, input_audio)")
    if limit is not None and len(values) > limit:
        raise WorkflowInputError(f"{len(values)} media parts in one message; the limit is {limit}")
    return values


def _artifact_links(text: str) -> tuple[str, list[str]]:
    """``text`` without links to artifacts, and the linked ids (in order)."""
    ids: list[str] = []

    def cut(m: re.Match[str]) -> str:
        aid = m.group(2) if m.group(2).startswith("sha256:") else f"sha256:{m.group(2)}"
        if aid not in ids:
            ids.append(aid)
        return ""

    return _LINK.sub(cut, text).strip(), ids


def parse_messages(messages: list[ChatMessage], *, max_media: int) -> Conversation:
    """Split the client's messages into the last user turn and the turns before it.

    System and tool messages are left out of the history (the agent has its own
    prompts). Raises :class:`WorkflowInputError` for malformed parts.
    """
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise WorkflowInputError("messages need at least one user message")
    last = messages[last_user]
    earlier: list[Turn] = []
    for message in messages[:last_user]:
        if message.role not in ("user", "assistant"):
            continue
        text, ids = _artifact_links(text_of(message))
        media: list[InputValue] = []
        for value in media_values(message):
            if value.artifact_id is not None:
                ids.extend(i for i in [value.artifact_id] if i not in ids)
            elif value.base64 is not None or (value.url or "").startswith("data:"):
                media.append(value)
            # other http(s) URLs of earlier turns are not fetched again
        if text or media or ids:
            earlier.append(Turn(message.role, text, media, ids))
    return Conversation(text=text_of(last), media=media_values(last, max_media), earlier=earlier)


def _resolve_turn(state: ServerState, turn: Turn, budget: list[int]) -> list[ArtifactRef]:
    refs: list[ArtifactRef] = []
    for aid in turn.artifact_ids:
        if budget[0] <= 0:
            break
        try:
            refs.append(state.store.stat(aid))
            budget[0] -= 1
        except ArtifactNotFound:
            logger.info("an earlier message links %s, which is no longer stored", aid)
    for value in turn.media:
        if budget[0] <= 0:
            break
        try:
            refs.append(resolve_input("history", value, declared=Modality(value.modality) if value.modality else None,
                                      store=state.store, core_settings=state.core,
                                      max_bytes=state.settings.max_upload_bytes))
            budget[0] -= 1
        except OrchestratorError as exc:
            logger.info("an earlier message's media was left out: %s", exc)
    return refs


def _write_session(state: ServerState, memory: Any, conversation: Conversation) -> str:
    session_id = f"history-{uuid.uuid4().hex}"
    session = memory.load(session_id)
    budget = [state.settings.max_chat_history_media]
    resolved = [_resolve_turn(state, turn, budget) for turn in reversed(conversation.earlier)]  # newest first
    for turn, refs in zip(conversation.earlier, reversed(resolved)):
        origin = "user upload" if turn.role == "user" else "earlier answer"
        memory.add_message(session, turn.role, turn.text, refs, origin=origin)
    memory.save(session)
    return session_id


async def seed_session(state: ServerState, conversation: Conversation) -> tuple[str, Any] | None:
    """Write the earlier turns into a fresh session of the agent's memory; returns (session id,
    memory), or None when there is no history. Remove it with :func:`forget_session`."""
    if not conversation.earlier:
        return None
    agent = await asyncio.to_thread(state.agent.get)
    memory = getattr(agent, "memory", None)
    if memory is None:
        from orchestrator.agent.memory import ChatMemory

        memory = ChatMemory(state.store)
    return await asyncio.to_thread(_write_session, state, memory, conversation), memory


async def forget_session(memory: Any, session_id: str) -> None:
    """Drop a session written by :func:`seed_session` (the client keeps the history)."""
    try:
        await asyncio.to_thread(memory.delete, session_id)
    except OrchestratorError as exc:
        logger.info("could not remove chat session %s: %s", session_id, exc)
