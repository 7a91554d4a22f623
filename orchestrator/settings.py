"""One settings object, read from ``ORCHESTRATOR_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Configuration. Every field can be set as ``ORCHESTRATOR_<FIELD>``.

    ``redis_url`` unset means the embedded directory store under ``data_dir``.
    """

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    redis_url: str | None = None
    key_prefix: str = "orch:"
    data_dir: Path = Path(".orchestrator")

    # artifact limits
    max_artifact_bytes: int = 1 << 30
    chunk_bytes: int = 1 << 20
    max_image_pixels: int = 64_000_000
    max_audio_seconds: float = 3600.0
    max_video_seconds: float = 1800.0
    decoded_cache_bytes: int = 512 << 20
    artifact_ttl_seconds: int | None = None

    # runtime
    profile: str = "tiny"
    profile_file: Path | None = None
    device: str | None = None
    dtype: str | None = None
    memory_budget_bytes: int | None = None
    cpu_offload: bool = False
    max_workers: int = Field(default=4, ge=1)

    # agent
    llm: str = "heuristic"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None

    # downloads (tools/downloaders.py, URL inputs of the server)
    allow_private_urls: bool = False
    download_max_bytes: int = 200 << 20
    download_timeout_seconds: float = 20.0
    download_max_redirects: int = 5
    download_deadline_seconds: float = 300.0

    # internet search tools (tools/search.py): 'module:attribute' of a SearchBackend; unset = refused at run time
    search_backend: str | None = None
    # offline planner (orchestrator/agent/offline): steps of one request beyond this are not planned (noted)
    planner_max_steps: int = Field(default=32, ge=1)

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
