"""Server settings, read from ``ORCHESTRATOR_*`` environment variables.

They sit beside the core :class:`~orchestrator.settings.Settings` (store, profile,
LLM) and only concern the HTTP server: where it listens, who may call it, and the
limits that protect it. Lists accept JSON (``["a","b"]``) or comma-separated text::

    ORCHESTRATOR_API_KEYS=key-one,key-two
    ORCHESTRATOR_CORS_ORIGINS=https://chat.example.org
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServerSettings", "api_key_problem", "is_loopback"]


def _split(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


class ServerSettings(BaseSettings):
    """Settings of ``orchestrator serve``. Every field is ``ORCHESTRATOR_<FIELD>``.

    With no ``api_keys`` the server refuses to listen on anything but loopback
    (unless ``allow_unauthenticated`` is set), so a default start is never open
    to the network.
    """

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    """Server processes sharing the listening socket and the store (``--workers``); each runs up to
    ``max_concurrent_runs`` and answers for the others' runs. More than one needs a shared store
    backend (Redis, or the embedded directory on one machine) and a POSIX system."""
    api_keys: StrList = Field(default_factory=list)
    """Bearer keys; when set, every ``/v1`` route and ``/metrics`` need one."""
    allow_unauthenticated: bool = False
    """Allow listening on a non-loopback address without API keys."""
    cors_origins: StrList = Field(default_factory=list)
    public_url: str | None = None
    """Base URL used in links (artifact downloads); default: the request's own base URL."""
    url_signing_key: str | None = None
    """Secret for signed artifact links (``?expires=&sig=``, accepted without the bearer key);
    default: derived from ``api_keys`` (so every server with the same keys accepts the same links)."""
    signed_url_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    """How long a signed artifact link in an answer or run view stays valid."""

    # runs
    max_concurrent_runs: int = Field(default=4, ge=1)
    max_queued_runs: int = Field(default=64, ge=0)
    """Runs waiting for a worker; one more gets 429 with Retry-After."""
    run_ttl_seconds: int | None = Field(default=7 * 24 * 3600, ge=1)
    """How long finished run records are kept (None: forever)."""
    cancel_grace_seconds: float = Field(default=5.0, ge=0)
    """After a cancel, how long a run may take to stop by itself before its task is cancelled."""
    lease_seconds: float = Field(default=15.0, gt=0)
    """A server's liveness lease; runs of a server whose lease expired are reported as interrupted."""
    event_poll_seconds: float = Field(default=0.5, gt=0)
    """The longest wait between re-reads of a run's record while its owner (another server process)
    finishes it; its events arrive without polling (a blocking read of the log, see ``event_follow_threads``)."""
    event_settle_seconds: float = Field(default=0.005, gt=0)
    """After another process's run logged its final event, the first wait before its record is
    re-read (its owner writes it right after); each further wait doubles, up to ``event_poll_seconds``."""
    finished_runs_cached: int = Field(default=1024, ge=0)
    """Final records of this process's latest finished runs kept in memory (they never change), so
    an event stream's end and status checks right after a run need no store read."""
    event_follow_threads: int = Field(default=32, ge=1)
    """Threads blocking on event logs of runs another server process executes (their own pool: the
    default one stays free); more followers than this wait their turn, at most ``event_wait_seconds``."""
    event_wait_seconds: float = Field(default=2.0, gt=0)
    """How long one blocking read of another process's run log waits before the run's record is re-checked."""
    running_record_delay_seconds: float = Field(default=0.05, ge=0)
    """A started run's record (``running``) is stored with its first events, or alone once the run is this old
    if none came (other processes say ``queued`` until then). A run still unfinished this long after it was
    submitted is marked active, for the sweep of runs whose server died; a run that ends sooner is not."""
    event_head_wait_seconds: float = Field(default=0.05, ge=0)
    """An event stream's response head waits this long for the run's first events, so that both go in one
    write (a light run's stream takes one write fewer); then a keep-alive goes with it."""
    event_linger_seconds: float = Field(default=0.0, ge=0)
    """The log writer waits this long before a round (unless a run's first batch, its end or a full batch
    waits), so events that follow close behind, of this run or others, go in the same round: fewer store
    calls, later events (and a crash loses the events still waiting). 0 (default): a round takes what
    accumulated while the previous one was stored."""
    event_batch_max: int = Field(default=256, ge=1)
    """Events of one run waiting to be stored (the log writer stores them in batches while the run goes
    on); at this many the run waits for the store, so a fast producer cannot outrun it without bound."""

    # limits
    max_upload_bytes: int = Field(default=256 << 20, ge=1)
    max_body_bytes: int = Field(default=32 << 20, ge=1)
    """JSON bodies (runs, chat completions with inline base64 media)."""
    max_chat_media: int = Field(default=8, ge=0)
    """Images and audio clips accepted in one chat request."""
    max_chat_history_media: int = Field(default=16, ge=0)
    """Earlier media (uploads and answer links in the client's ``messages``) carried into one chat run."""
    max_images_per_request: int = Field(default=4, ge=1, le=16)
    """``n`` of ``/v1/images/generations`` and ``/v1/images/edits``."""
    max_speech_chars: int = Field(default=4096, ge=1)
    """``input`` of ``/v1/audio/speech``."""
    max_embedding_inputs: int = Field(default=64, ge=1)
    """Items in one ``/v1/embeddings`` request."""
    media_timeout_seconds: float = Field(default=600.0, gt=0)
    """How long an OpenAI media request waits for its run."""
    max_prompt_chars: int = Field(default=20_000, ge=1)
    """Characters of a run's prompt, and of a chat request's last user message."""
    max_header_bytes: int = Field(default=32 << 10, ge=1024)
    """Size of a request's head (request line and headers); larger ones get 431 and are closed."""
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    """Time a client has to send a complete request head (slow senders are disconnected)."""

    # extensions
    tool_modules: StrList = Field(default_factory=list)
    """Extra tools: ``module`` (imported; its ``@tool`` functions register) or ``module:function``
    (called; it registers tools or returns them)."""

    @field_validator("api_keys", "cors_origins", "tool_modules", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        problem = api_key_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def api_key_problem(keys: list[str]) -> str | None:
    """Why these API keys cannot be used (an empty or blank key would leave the API open), or ``None``."""
    for i, key in enumerate(keys):
        if not key or not key.strip():
            return (f"API key #{i + 1} is empty or blank; an empty key would leave the API open "
                    "(give a real key, or none to listen on loopback only)")
        if key != key.strip():
            return f"API key #{i + 1} starts or ends with whitespace"
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (IPv4 or IPv6)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
