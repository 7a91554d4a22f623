"""Request and response bodies of the REST API (they make the published OpenAPI schema)."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from orchestrator.runs import RunRecord

__all__ = [
    "ArtifactView",
    "ChatCompletionRequest",
    "ChatMessage",
    "InputValue",
    "RunOptions",
    "RunRequest",
    "RunView",
]


class InputValue(BaseModel):
    """One run input, in exactly one of its forms.

    A bare string in ``inputs`` is shorthand: ``"sha256:…"`` is an artifact id,
    anything else is text.
    """

    model_config = ConfigDict(extra="forbid")

    artifact_id: str | None = Field(default=None, description="an uploaded or generated artifact: sha256:<hex>")
    text: str | None = None
    base64: str | None = Field(default=None, description="inline bytes, base64 (standard or URL-safe)")
    url: str | None = Field(default=None, description="http(s) URL fetched under the downloader's limits, or a data: URL")
    modality: Literal["text", "image", "audio", "video", "embedding", "json"] | None = Field(
        default=None, description="needed for base64/URL bytes when the workflow does not declare it and sniffing fails"
    )

    @model_validator(mode="after")
    def _one_form(self) -> InputValue:
        given = [k for k in ("artifact_id", "text", "base64", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of artifact_id, text, base64, url (got {given or 'none'})")
        return self


@functools.cache
def _packaged_profiles() -> list[str]:
    from orchestrator.runtime.profiles import PROFILES_DIR

    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                description="a named model profile (offline, tiny, default); default: the server's")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    cache: bool = True
    session_id: str | None = Field(default=None, max_length=200, description="agent chat memory session")

    @model_validator(mode="after")
    def _known_profile(self) -> RunOptions:
        """Only the profiles shipped with the package (never a path on the server's disk)."""
        if self.profile is not None:
            known = _packaged_profiles()
            if self.profile not in known:
                raise ValueError(f"unknown profile {self.profile!r}; known: {known}")
        return self


class RunRequest(BaseModel):
    """Start a run: exactly one of ``prompt`` (the agent plans it), ``graph`` (a prebuilt
    graph by name) or ``workflow`` (a workflow JSON document)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, min_length=1, max_length=100_000)
    graph: str | None = Field(default=None, max_length=200)
    workflow: dict[str, Any] | None = None
    inputs: dict[str, str | InputValue] = Field(default_factory=dict)
    options: RunOptions = Field(default_factory=RunOptions)

    @model_validator(mode="after")
    def _one_kind(self) -> RunRequest:
        given = [k for k in ("prompt", "graph", "workflow") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of prompt, graph, workflow (got {given or 'none'})")
        return self


class ArtifactView(BaseModel):
    """An artifact ref plus where to download it."""

    model_config = ConfigDict(extra="allow")

    id: str
    modality: str
    mime: str
    size: int
    meta: dict[str, Any] = Field(default_factory=dict)
    url: str


class RunView(RunRecord):
    """A run's state: what was asked, where it is, what it produced and what went wrong (the run
    record, with download links for its artifacts and where its events stream)."""

    inputs: dict[str, ArtifactView | Any] = Field(default_factory=dict)
    outputs: dict[str, ArtifactView] = Field(default_factory=dict)
    owner: SkipJsonSchema[str] = Field(default="", exclude=True)
    """Which server runs it: internal, never shown."""
    events_url: str | None = None


class ChatMessage(BaseModel):
    """An OpenAI chat message; ``content`` is text or a list of content parts
    (``text``, ``image_url`` with a data: or http(s) URL, ``input_audio``)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions request. Sampling fields are accepted and mostly ignored;
    ``seed`` is passed on. The ``messages`` are the history; ``session_id`` (or the
    ``X-Session-Id`` header) selects server-side chat memory for single-message requests."""

    model_config = ConfigDict(extra="allow")

    model: str = "orchestrator"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    user: str | None = None
    session_id: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    modalities: list[str] | None = Field(default=None, description='["text", "audio"]: the answer also as message.audio')
    audio: dict[str, Any] | None = Field(default=None, description='{"voice", "format"} of the spoken answer')
