"""One settings object, read from ``ORCHESTRATOR_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


PlannerEncoder = Literal["onnx-int8", "onnx", "torch"]
"""How the offline planner runs MiniLM (``Settings.planner_encoder``)."""

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
    max_audio_samples: int = Field(default=32_000_000, ge=1)
    """channels x sample rate x duration an audio file may decode to (checked before decoding)."""
    max_video_pixels: int = Field(default=256_000_000, ge=1)
    """width x height x frames a video may decode to (checked before decoding)."""
    decoded_cache_bytes: int = 512 << 20
    write_behind_bytes: int = Field(default=1 << 20, ge=0)
    """Bytes of small node outputs a store holds in memory before writing them, in one batch (a run
    writes the rest when it ends; artifacts/store.py write-behind); 0: every output written at once."""
    artifact_ttl_seconds: int | None = None

    # runtime
    profile: str = "offline"  # real packaged models where they exist, the tiny zoo elsewhere
    profile_file: Path | None = None
    device: str | None = None
    dtype: str | None = None
    memory_budget_bytes: int | None = None
    cpu_offload: bool = False
    max_workers: int = Field(default=4, ge=1)
    inline_tool_seconds: float = Field(default=0.001, ge=0)
    """A blocking tool whose calls take less than this on average runs on the run's event loop,
    sparing two thread hand-offs (workflow/_loop.py QuickCalls); 0: always in the thread pool."""
    node_cache_memo_entries: int = Field(default=4096, ge=0)
    """Node-cache records (cache key -> output ids) a process remembers per store, so a cached rerun
    checks all its artifacts in one store call instead of reading one record per node; 0: none."""
    torch_threads: int | None = Field(default=None, ge=1)
    """CPU threads that concurrent model calls share (each gets an equal part); None: every core."""
    cpu_heap_keep_bytes: int = Field(default=256 << 20, ge=0, le=(1 << 31) - 1)
    """On CPU (glibc), freed memory up to this many bytes stays in the process between model calls, and
    blocks up to 64 MiB come from the heap, instead of going back to the OS after each call and being
    faulted in again on the next (thousands of minor page faults per batched text-to-image call);
    process-wide, in every allocator arena (runtime/_device.py keep_freed_memory); 0: left as it is (the C
    library's defaults unless something set it before)."""
    preload_imports: list[str] = Field(default_factory=lambda: [
        "torch", "transformers", "diffusers:AutoPipelineForText2Image"])
    """Libraries ``orchestrator run`` imports in a background thread while it plans (``module`` or
    ``module:attribute``, in this order; not installed ones are skipped); empty: none (runtime/_imports.py).
    The planner's MiniLM runs on ONNX Runtime and needs none of them (``planner_encoder=torch`` waits
    for its sentence_transformers import here, so list it first then)."""

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
    llm: str = "offline"
    """The LLM spec (``offline``: no LLM, the offline planner; ``openai:<model>[@url]``, ``ollama:…`` …)."""
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    llm_read_timeout_seconds: float = Field(default=120.0, gt=0)
    """Most seconds between two bytes of an LLM answer."""
    llm_request_deadline_seconds: float = Field(default=600.0, gt=0)
    """Most seconds one LLM call may take, retries and streaming included."""
    llm_run_deadline_seconds: float = Field(default=1800.0, gt=0)
    """Most seconds of wall time the LLM calls of one agent run may reach to (plan, repairs, text tasks, answer)."""
    llm_max_retries: int = Field(default=3, ge=0)
    llm_max_new_tokens: int = Field(default=512, ge=1)
    """Most tokens a local (``transformers:``) model generates for one answer (decoding is greedy)."""

    # downloads (tools/downloaders.py, URL inputs of the server)
    allow_private_urls: bool = False
    download_max_bytes: int = 200 << 20
    download_timeout_seconds: float = 20.0
    download_max_redirects: int = 5
    download_deadline_seconds: float = 300.0

    # work amplification (a small request must not start unbounded work)
    max_workflow_nodes: int = Field(default=1000, ge=1)
    """Nodes of a workflow once its sub-workflows are inlined (checked before inlining)."""
    max_workflow_depth: int = Field(default=16, ge=1)
    """How deep sub-workflows may nest."""
    max_plan_tasks: int = Field(default=64, ge=1)
    """Tasks in one plan (an LLM's or the offline planner's)."""
    max_plan_arg_chars: int = Field(default=500, ge=1)
    """Characters of one string argument in a plan's JSON Schema (a small model may never close a string)."""
    max_spans_per_message: int = Field(default=4, ge=0)
    """Modality-signal spans dispatched from one chat reply; later ones get a note instead."""
    max_run_media: int = Field(default=64, ge=1)
    """Media artifacts (image, audio, video) one run may generate."""
    # internet search tools (tools/search.py): 'module:attribute' of a SearchBackend; unset = refused at run time
    search_backend: str | None = None
    # offline planner (orchestrator/agent/offline): steps of one request beyond this are not planned (noted)
    planner_max_steps: int = Field(default=32, ge=1)
    planner_cache_dir: Path | None = None
    """Where the offline planner keeps the tool side's embeddings between processes (one ``.npy`` per
    encoder and tool texts); None: ``data_dir/cache/planner``."""
    planner_cache_files: int = Field(default=8, ge=0)
    """Tool-side embedding files kept there (the least recently written go first); 0: no disk cache."""
    planner_encoder: PlannerEncoder = "onnx-int8"
    """How the offline planner runs MiniLM: ``onnx-int8`` (int8 MatMuls with 7-bit weights and each one's
    outlier input channels in fp32, one text per call: 1.2x fp32's speed on AVX2, 2x with VNNI; a text's
    vector depends on no other text, within cosine 0.99 of fp32 (0.998 on average), plan F1 within 0.01
    of fp32's), ``onnx``
    (ONNX Runtime, fp32: torch's vectors to 1e-6, about 2x torch's speed on CPU), or ``torch``
    (sentence-transformers).
    The ONNX exports are made once per machine under ``planner_cache_path/models`` (that first time
    needs torch and the ``onnx`` package); where that fails, the planner runs on torch and says why."""

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def planner_cache_path(self) -> Path:
        return self.planner_cache_dir if self.planner_cache_dir is not None else self.data_dir / "cache" / "planner"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
