"""One settings object, read from ``ORCHESTRATOR_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

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

    # executors (docs/ray.md): where node calls run
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    """Unset: start a local Ray; ``auto`` or ``host:port`` / ``ray://…``: join that cluster."""
    ray_config: Path | None = None
    """Ray Serve deployment config (YAML); unset: the packaged ``executors/serve.yaml``."""
    ray_num_cpus: int | None = Field(default=None, ge=1)
    """CPUs of a locally started Ray (unset: all)."""
    ray_shared_data_dir: bool = False
    """Declare ``data_dir`` shared by every Ray node, allowing Ray with the embedded store
    (checked at start: a replica must see a token file the driver writes)."""
    ray_start_timeout_seconds: float = Field(default=120.0, gt=0)

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

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
