"""The orchestrator's one error tree.

Every error the library raises on purpose derives from :class:`OrchestratorError`.
Errors from lower layers (redis, httpx, torch, ffmpeg) are translated at the
boundary with ``raise OurError(...) from exc`` so callers catch one family::

    OrchestratorError
    ├── ConfigError                  bad setting, profile or unknown model id
    ├── ArtifactError                anything about one artifact (carries artifact_id=)
    │   ├── ArtifactNotFound
    │   ├── ArtifactDecodeError      bytes that are not what they claim to be
    │   └── ArtifactTooLarge         over a size, pixel or duration limit
    ├── StoreUnavailable             the backend (Redis, the data directory) cannot be reached
    ├── ExecutorError                a remote executor (Ray Serve) failed a node call (carries node=, replica=)
    │   └── ExecutorUnavailable      the Ray cluster cannot be reached or the deployments did not start
    ├── ToolError                    registration or call of a tool (carries tool=)
    │   ├── ToolRegistrationError
    │   ├── ToolNotFound
    │   ├── ToolInputError           a tool was given input it cannot use
    │   └── TaskRefused              a tool declines a task it cannot do honestly here (no LLM offline)
    ├── WorkflowError                workflow document or graph (carries node=, port=)
    │   ├── WorkflowValidationError  every problem found at compile time, listed
    │   ├── WorkflowInputError       missing or wrong-modality run inputs
    │   ├── NodeFailed               a node raised after its retries (carries node=)
    │   └── RunCancelled
    ├── ModelError                   model runtime (carries model=, task=)
    │   ├── ModelNotFound
    │   ├── ModelLoadError
    │   ├── BackendUnavailable       an optional extra (audiocraft, ray …) is not installed
    │   └── ParamError               out-of-range generation parameter (carries param=)
    ├── LLMError                     LLM client (carries status=)
    │   ├── LLMUnavailable           connection refused, timeout, 5xx after retries
    │   └── LLMResponseError         an answer the client cannot use
    ├── PlanError                    a task plan that cannot be parsed or run (carries task_id=)
    └── DownloadError                a URL fetch refused or failed (carries url=)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactDecodeError",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactTooLarge",
    "BackendUnavailable",
    "ConfigError",
    "DownloadError",
    "ExecutorError",
    "ExecutorUnavailable",
    "LLMError",
    "LLMResponseError",
    "LLMUnavailable",
    "ModelError",
    "ModelLoadError",
    "ModelNotFound",
    "NodeFailed",
    "OrchestratorError",
    "ParamError",
    "PlanError",
    "RunCancelled",
    "StoreUnavailable",
    "ToolError",
    "ToolInputError",
    "TaskRefused",
    "ToolNotFound",
    "ToolRegistrationError",
    "WorkflowError",
    "WorkflowInputError",
    "WorkflowValidationError",
]


class OrchestratorError(Exception):
    """Base of every error raised by the orchestrator.

    Context travels as keyword-only arguments and is kept in :attr:`context`;
    ``str(err)`` shows the message followed by the context.
    """

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}
        for key, value in context.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        if not self.context:
            return self.message
        ctx = ", ".join(f"{k}={v!r}" for k, v in self.context.items())
        return f"{self.message} ({ctx})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for events and HTTP error bodies."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            **{k: v if isinstance(v, (str, int, float, bool, list, dict)) else str(v) for k, v in self.context.items()},
        }


class ConfigError(OrchestratorError):
    """A setting, profile entry or model reference is wrong."""


class ArtifactError(OrchestratorError):
    """A problem with one artifact; ``artifact_id`` names it when known."""

    def __init__(self, message: str, *, artifact_id: str | None = None, **context: Any) -> None:
        super().__init__(message, artifact_id=artifact_id, **context)


class ArtifactNotFound(ArtifactError):
    """No artifact with that id is in the store (or it expired)."""


class ArtifactDecodeError(ArtifactError):
    """The bytes are empty, truncated, or not the declared modality."""


class ArtifactTooLarge(ArtifactError):
    """Over the configured size, pixel or duration limit."""


class StoreUnavailable(OrchestratorError):
    """The artifact store's backend cannot be reached."""


class ExecutorError(OrchestratorError):
    """A remote executor lost a node call (a replica died, the call was refused); the node may retry."""


class ExecutorUnavailable(ExecutorError):
    """The Ray cluster cannot be reached, or its deployments did not start."""


class ToolError(OrchestratorError):
    """A problem with a tool; ``tool`` names it."""

    def __init__(self, message: str, *, tool: str | None = None, **context: Any) -> None:
        super().__init__(message, tool=tool, **context)


class ToolRegistrationError(ToolError):
    """A tool spec is invalid or its name is taken."""


class ToolNotFound(ToolError):
    """No tool is registered under that name or task."""


class ToolInputError(ToolError):
    """A tool received input it cannot use (corrupt, silent, wrong shape …)."""


class TaskRefused(ToolError):
    """A tool declines a task it cannot do honestly here (a text task that needs an LLM, offline).

    The agent reports the task as ``refused``, not ``failed``; the rest of the plan still runs.
    """


class WorkflowError(OrchestratorError):
    """A problem with a workflow graph or document."""


class WorkflowValidationError(WorkflowError):
    """Compile-time validation failed; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str], **context: Any) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"workflow is invalid ({len(self.problems)} problem(s)):\n{lines}", **context)


class WorkflowInputError(WorkflowError):
    """A run input is missing or has the wrong modality."""


class NodeFailed(WorkflowError):
    """A node failed after its retries; ``node`` names it."""


class RunCancelled(WorkflowError):
    """The run was cancelled before it finished."""


class ModelError(OrchestratorError):
    """A problem in the model runtime; ``model`` and ``task`` name what."""


class ModelNotFound(ModelError):
    """Unknown model id, or a local path that does not exist."""


class ModelLoadError(ModelError):
    """The model exists but could not be loaded."""


class BackendUnavailable(ModelError):
    """The backend needs an optional extra that is not installed."""


class ParamError(ModelError):
    """A generation parameter is out of range; ``param`` names it."""


class LLMError(OrchestratorError):
    """A problem talking to the central LLM."""


class LLMUnavailable(LLMError):
    """The LLM server cannot be reached or keeps failing."""


class LLMResponseError(LLMError):
    """The LLM answered something the client cannot use."""


class PlanError(OrchestratorError):
    """A task plan that cannot be parsed, validated or compiled."""


class DownloadError(OrchestratorError):
    """A URL fetch was refused by policy or failed."""
