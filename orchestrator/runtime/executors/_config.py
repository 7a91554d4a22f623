"""The deployment config: a Ray Serve config file whose application is built by ``build_app``.

The orchestrator's part lives in the application's ``args`` (groups of tools, one deployment
each); the rest is Ray Serve's own schema, so the same file works with ``serve deploy``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import ConfigError

__all__ = ["AppArgs", "BatchSpec", "DeployConfig", "GroupSpec", "default_config_path", "load_config"]

BUILDER = "orchestrator.runtime.executors:build_app"


def default_config_path() -> Path:
    """The packaged config (one replica per group, CPU)."""
    return Path(__file__).with_name("serve.yaml")


class BatchSpec(BaseModel):
    """``@serve.batch`` settings of a group whose tools batch (text-to-image)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.05, ge=0.0, le=60.0)


class GroupSpec(BaseModel):
    """One deployment: which tools it serves and how Ray places and scales it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    tools: list[str] = Field(min_length=1, description="fnmatch patterns of tool names")
    num_replicas: int | None = Field(1, ge=1)
    autoscaling_config: dict[str, Any] | None = None
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    max_ongoing_requests: int = Field(16, ge=1)
    batch: BatchSpec | None = None
    models_per_replica: int = Field(2, ge=1, description="models one replica keeps (@serve.multiplexed)")

    def serves(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        options: dict[str, Any] = {
            "name": self.name,
            "ray_actor_options": dict(self.ray_actor_options),
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config
        else:
            options["num_replicas"] = self.num_replicas
        return options


class AppArgs(BaseModel):
    """The ``args`` of the orchestrator application."""

    model_config = ConfigDict(extra="forbid")

    groups: list[GroupSpec] = Field(min_length=1)
    imports: list[str] = Field(default_factory=list, description="modules a replica imports for their tools: 'module' or 'module:registry'")

    def group_for(self, tool: str) -> GroupSpec | None:
        """The first group that serves ``tool``; ``None``: the tool runs in the caller's process."""
        return next((g for g in self.groups if g.serves(tool)), None)


class DeployConfig(BaseModel):
    """A parsed config file: the Serve document, the app's name and its args."""

    path: Path
    document: dict[str, Any]
    app_name: str
    args: AppArgs


def load_config(path: str | Path | None = None) -> DeployConfig:
    """Read and check a deployment config (default: the packaged one)."""
    import yaml

    path = Path(path) if path is not None else default_config_path()
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the Ray deployment config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    apps = document.get("applications") if isinstance(document, dict) else None
    if not isinstance(apps, list):
        raise ConfigError(f"{path}: expected a Ray Serve config with an 'applications' list")
    ours = [a for a in apps if isinstance(a, dict) and a.get("import_path") == BUILDER]
    if len(ours) != 1:
        raise ConfigError(f"{path}: expected exactly one application with import_path {BUILDER!r}, found {len(ours)}")
    app = ours[0]
    try:
        args = AppArgs.model_validate(app.get("args") or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: application args: {problems}") from exc
    names = [g.name for g in args.groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: group names must be unique, got {names}")
    return DeployConfig(path=path, document=document, app_name=str(app.get("name") or "orchestrator"), args=args)
