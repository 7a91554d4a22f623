"""Chat sessions kept in the artifact store's records (Redis or the embedded directory).

A session is a list of messages, each with the artifacts it produced or received,
plus an index of the session's media under stable aliases (``image-1``,
``audio-2`` …) that survives history trimming, so "make the previous image black
and white" resolves to the last image even after its message was trimmed.

Sessions are keyed by id, not by process: any process that opens the same store
sees the same session. Writes in one process are serialized per session; two
processes writing the same session at the same instant: the last write wins.

>>> memory = ChatMemory(store)                                   # doctest: +SKIP
>>> memory.append("s1", "user", "draw a cat")                     # doctest: +SKIP
>>> memory.last_artifact(memory.load("s1"), "image")              # doctest: +SKIP
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.artifacts import ArtifactRef, Modality

__all__ = ["ChatMemory", "ChatSession", "SessionArtifact", "StoredMessage", "approx_tokens"]

NAMESPACE = "agent.chat_sessions"
_PREVIOUS = re.compile(
    r"\b(?:previous|last|latest|prior|earlier|that|this|same|above|generated|the\s+one)\s+"
    r"(image|picture|photo|drawing|audio|sound|speech|music|song|video|clip)\b",
    re.IGNORECASE,
)
_WORD_MODALITY = {
    "image": Modality.IMAGE, "picture": Modality.IMAGE, "photo": Modality.IMAGE, "drawing": Modality.IMAGE,
    "audio": Modality.AUDIO, "sound": Modality.AUDIO, "speech": Modality.AUDIO, "music": Modality.AUDIO,
    "song": Modality.AUDIO, "video": Modality.VIDEO, "clip": Modality.VIDEO,
}


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about four characters per token, plus per-message overhead)."""
    return len(text) // 4 + 4


class SessionArtifact(BaseModel):
    """A session's media under a stable alias, with where it came from."""

    alias: str
    ref: ArtifactRef
    origin: str = ""  # "user upload", "text-to-image: a cat" …
    message: int = 0  # index (monotonic) of the message it belongs to


class StoredMessage(BaseModel):
    role: str
    content: str
    artifacts: list[str] = Field(default_factory=list)  # aliases
    ts: float = Field(default_factory=time.time)
    n: int = 0  # monotonic message number in the session


class ChatSession(BaseModel):
    """One conversation: trimmed history plus the media index."""

    id: str
    messages: list[StoredMessage] = Field(default_factory=list)
    artifacts: list[SessionArtifact] = Field(default_factory=list)
    counter: int = 0
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    trimmed: int = 0  # messages dropped to stay within the token budget

    def alias_of(self, ref: ArtifactRef) -> str | None:
        return next((a.alias for a in self.artifacts if a.ref.id == ref.id), None)

    def artifact(self, alias: str) -> SessionArtifact | None:
        return next((a for a in self.artifacts if a.alias == alias), None)


class ChatMemory:
    """Load, append to and trim chat sessions in a store's records."""

    def __init__(self, store: Any, *, token_budget: int = 3000, max_artifacts: int = 64, ttl: int | None = None,
                 namespace: str = NAMESPACE) -> None:
        self.store = store
        self.token_budget = token_budget
        self.max_artifacts = max_artifacts
        self.ttl = ttl
        self.namespace = namespace
        self._locks: dict[str, threading.RLock] = {}
        self._locks_lock = threading.Lock()

    def lock(self, session_id: str) -> threading.RLock:
        with self._locks_lock:
            return self._locks.setdefault(session_id, threading.RLock())

    # ------------------------------------------------------------ records
    def load(self, session_id: str) -> ChatSession:
        """The session (an empty one if it does not exist yet)."""
        doc = self.store.get_record(self.namespace, session_id)
        return ChatSession.model_validate(doc) if doc else ChatSession(id=session_id)

    def save(self, session: ChatSession) -> None:
        session.updated = time.time()
        self._trim(session)
        self.store.put_record(self.namespace, session.id, session.model_dump(mode="json"), ttl=self.ttl)

    def delete(self, session_id: str) -> bool:
        return self.store.delete_record(self.namespace, session_id)

    def list_sessions(self) -> list[str]:
        return self.store.list_records(self.namespace)

    # ------------------------------------------------------------ writing
    def append(self, session_id: str, role: str, content: str, artifacts: Iterable[ArtifactRef] = (),
               *, origin: str = "") -> ChatSession:
        """Add one message (and its artifacts) and save; returns the updated session."""
        with self.lock(session_id):
            session = self.load(session_id)
            self.add_message(session, role, content, artifacts, origin=origin)
            self.save(session)
            return session

    def add_message(self, session: ChatSession, role: str, content: str, artifacts: Iterable[ArtifactRef] = (),
                    *, origin: str = "") -> StoredMessage:
        session.counter += 1
        aliases = [self.add_artifact(session, ref, origin=origin, message=session.counter) for ref in artifacts]
        msg = StoredMessage(role=role, content=content, artifacts=aliases, n=session.counter)
        session.messages.append(msg)
        return msg

    def add_artifact(self, session: ChatSession, ref: ArtifactRef, *, origin: str = "", message: int = 0) -> str:
        """Index a ref under ``<modality>-<n>`` (once per artifact id); returns its alias."""
        existing = session.alias_of(ref)
        if existing is not None:
            return existing
        n = 1 + sum(1 for a in session.artifacts if a.ref.modality is ref.modality)
        used = {a.alias for a in session.artifacts}
        alias = f"{ref.modality.value}-{n}"
        while alias in used:
            n += 1
            alias = f"{ref.modality.value}-{n}"
        session.artifacts.append(SessionArtifact(alias=alias, ref=ref, origin=origin, message=message))
        if len(session.artifacts) > self.max_artifacts:
            del session.artifacts[: len(session.artifacts) - self.max_artifacts]
        return alias

    def _trim(self, session: ChatSession) -> None:
        total = sum(approx_tokens(m.content) for m in session.messages)
        while session.messages and total > self.token_budget and len(session.messages) > 1:
            total -= approx_tokens(session.messages.pop(0).content)
            session.trimmed += 1

    # ------------------------------------------------------------ reading
    def context(self, session: ChatSession, *, budget: int | None = None) -> list[dict[str, Any]]:
        """The newest messages that fit ``budget`` tokens, as chat messages with their media named."""
        budget = self.token_budget if budget is None else budget
        out: list[dict[str, Any]] = []
        used = 0
        for m in reversed(session.messages):
            text = m.content
            if m.artifacts:
                text += "\n[media: " + ", ".join(m.artifacts) + "]"
            cost = approx_tokens(text)
            if out and used + cost > budget:
                break
            used += cost
            out.append({"role": m.role, "content": text})
        return list(reversed(out))

    def last_artifact(self, session: ChatSession, modality: Modality | str) -> SessionArtifact | None:
        m = Modality(modality)
        return next((a for a in reversed(session.artifacts) if a.ref.modality is m), None)

    def media_resources(self, session: ChatSession, *, per_modality: int = 3) -> list[SessionArtifact]:
        """The most recent media of each modality (newest first), to offer the planner as resources."""
        out: list[SessionArtifact] = []
        counts: dict[Modality, int] = {}
        for a in reversed(session.artifacts):
            if counts.get(a.ref.modality, 0) < per_modality:
                counts[a.ref.modality] = counts.get(a.ref.modality, 0) + 1
                out.append(a)
        return out

    def resolve_references(self, session: ChatSession, text: str) -> dict[str, SessionArtifact]:
        """Phrases like "the previous image" -> the session's last artifact of that modality."""
        found: dict[str, SessionArtifact] = {}
        for m in _PREVIOUS.finditer(text):
            modality = _WORD_MODALITY[m.group(1).lower()]
            art = self.last_artifact(session, modality)
            if art is not None:
                found[m.group(0)] = art
        for alias in re.findall(r"\b(?:image|audio|video|text)-\d+\b", text):
            art = session.artifact(alias)
            if art is not None:
                found[alias] = art
        return found

