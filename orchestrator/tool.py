"""The one small interface shared by every tool and decoder.

A tool is a spec (name, HuggingGPT task, ports, params model, version) plus a
function that takes decoded inputs by port name and returns outputs by port name::

    from pydantic import BaseModel
    from orchestrator import tool

    class Upper(BaseModel):
        suffix: str = ""

    @tool("text.upper", task="text-transform", description="Upper-case a text.",
          inputs={"text": "text"}, outputs={"text": "text"}, params=Upper)
    def upper(text: str, *, params: Upper, ctx) -> dict:
        return {"text": text.upper() + params.suffix}

The function may be ``async def``. It receives only the ports it declares plus
``params`` and ``ctx`` (a :class:`ToolContext`) as keywords, when it names them.
A tool with exactly one output may return the bare value instead of a dict.
Heavy libraries (torch, diffusers, transformers) are imported inside the function,
so listing the registry stays fast.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.artifacts import Modality

if TYPE_CHECKING:
    from orchestrator.agent.llm import LLMClient
from orchestrator.errors import ToolError, ToolInputError, ToolRegistrationError

__all__ = ["NoParams", "Port", "Tool", "ToolContext", "ToolSpec", "tool"]

logger = logging.getLogger("orchestrator.tool")


class NoParams(BaseModel):
    """Params model of a tool that takes none."""

    model_config = ConfigDict(extra="forbid")


class Port(BaseModel):
    """A named, typed input or output of a tool.

    ``many`` ports take a list of artifacts (an image slideshow, an audio splice);
    ``optional`` input ports may stay unbound.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    modality: Modality
    optional: bool = False
    many: bool = False
    description: str = ""


class ToolSpec(BaseModel):
    """Everything the engine and the planner need to know about a tool."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    task: str
    description: str
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...]
    params: type[BaseModel] = NoParams
    version: str = "1"
    seeded: bool = False
    """The tool samples: it is cached only when a seed is fixed."""
    cacheable: bool = True
    """False for tools whose result depends on the outside world (downloads)."""

    def input(self, name: str) -> Port | None:
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> Port | None:
        return next((p for p in self.outputs if p.name == name), None)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (catalog endpoints, LLM prompts)."""
        return {
            "name": self.name,
            "task": self.task,
            "description": self.description,
            "version": self.version,
            "seeded": self.seeded,
            "inputs": [p.model_dump(mode="json") for p in self.inputs],
            "outputs": [p.model_dump(mode="json") for p in self.outputs],
            "params_schema": self.params.model_json_schema(),
        }


@dataclass
class ToolContext:
    """What a running tool may use besides its inputs.

    ``progress(step, total)`` reports progress (denoising steps, blocks);
    ``seed`` is the effective seed (params.seed, else one derived from the run seed);
    ``models`` is the model manager and ``profile`` the active profile; a tool may add
    entries to ``provenance`` (e.g. the resolved model id).
    """

    node: str = ""
    seed: int | None = None
    models: Any = None
    profile: Any = None
    settings: Any = None
    store: Any = None
    on_progress: Callable[[int, int, str | None], None] | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    logger: logging.Logger = logger
    provenance: dict[str, Any] = field(default_factory=dict)
    """Extra provenance a tool records (resolved model, effective settings); the engine merges it
    into every output artifact's metadata."""
    llm: LLMClient | None = None
    """The run's LLM client (text tools such as ``summarization``); None: use the one ``settings`` names."""

    def progress(self, step: int, total: int, message: str | None = None) -> None:
        if self.on_progress is not None:
            self.on_progress(step, total, message)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


def _ports(value: Mapping[str, Any] | None) -> tuple[Port, ...]:
    ports = []
    for name, spec in (value or {}).items():
        if isinstance(spec, Port):
            ports.append(spec if spec.name == name else spec.model_copy(update={"name": name}))
        elif isinstance(spec, Mapping):
            ports.append(Port(name=name, **spec))
        else:
            ports.append(Port(name=name, modality=Modality(spec)))
    return tuple(ports)


class Tool:
    """A registered tool: a :class:`ToolSpec` and the function that runs it."""

    def __init__(self, spec: ToolSpec, fn: Callable[..., Any]) -> None:
        self.spec = spec
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self._check_signature()

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Tool({self.spec.name!r}, task={self.spec.task!r})"

    def _check_signature(self) -> None:
        sig = inspect.signature(self.fn)
        accepted = {
            n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        ports = {p.name for p in self.spec.inputs}
        if ports & {"params", "ctx"}:
            raise ToolRegistrationError("input ports may not be named 'params' or 'ctx'", tool=self.spec.name)
        missing = sorted(ports - accepted)
        extra = sorted(
            n for n in accepted - ports - {"params", "ctx"} if sig.parameters[n].default is inspect.Parameter.empty
        )
        if missing or extra:
            raise ToolRegistrationError(
                f"function {self.fn.__name__}{sig} does not match the ports: "
                + (f"no parameter for input port(s) {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"required parameter(s) {extra} are not input ports" if extra else ""),
                tool=self.spec.name,
            )
        if not self.spec.outputs:
            raise ToolRegistrationError("a tool needs at least one output port", tool=self.spec.name)
        self._wants = {n for n in ("params", "ctx") if n in accepted}

    def validate_params(self, params: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        """Validate params against the tool's model (raises ``pydantic.ValidationError``)."""
        if isinstance(params, self.spec.params):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump()
        return self.spec.params.model_validate(dict(params or {}))

    def _kwargs(self, inputs: Mapping[str, Any], params: BaseModel, ctx: ToolContext) -> dict[str, Any]:
        kwargs = {p.name: inputs.get(p.name) for p in self.spec.inputs if p.name in inputs or p.optional}
        if "params" in self._wants:
            kwargs["params"] = params
        if "ctx" in self._wants:
            kwargs["ctx"] = ctx
        return kwargs

    def _outputs(self, result: Any) -> dict[str, Any]:
        names = [p.name for p in self.spec.outputs]
        if not isinstance(result, Mapping) or (len(names) == 1 and names[0] not in result):
            if len(names) != 1:
                raise ToolError(f"returned {type(result).__name__}; expected a dict with keys {names}", tool=self.name)
            result = {names[0]: result}
        missing = [n for n in names if n not in result and not self.spec.output(n).optional]  # type: ignore[union-attr]
        if missing:
            raise ToolError(f"did not return output port(s) {missing}", tool=self.name)
        unknown = sorted(set(result) - set(names))
        if unknown:
            raise ToolError(f"returned unknown output port(s) {unknown}", tool=self.name)
        return {k: v for k, v in result.items() if v is not None}

    def call(self, inputs: Mapping[str, Any], params: Mapping[str, Any] | BaseModel | None = None,
             ctx: ToolContext | None = None) -> dict[str, Any]:
        """Run the tool synchronously on decoded inputs; returns outputs by port name."""
        params = self._params_or_error(params)
        kwargs = self._kwargs(inputs, params, ctx or ToolContext())
        result = asyncio.run(self.fn(**kwargs)) if self.is_async else self.fn(**kwargs)
        return self._outputs(result)

    async def acall(self, inputs: Mapping[str, Any], params: Mapping[str, Any] | BaseModel | None = None,
                    ctx: ToolContext | None = None) -> dict[str, Any]:
        """Run the tool from async code: async tools are awaited, sync ones run in a thread."""
        params = self._params_or_error(params)
        kwargs = self._kwargs(inputs, params, ctx or ToolContext())
        if self.is_async:
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        return self._outputs(result)

    def _params_or_error(self, params: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        try:
            return self.validate_params(params)
        except ValidationError as exc:
            raise ToolInputError(f"invalid params: {_short_validation(exc)}", tool=self.name) from exc


def _short_validation(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())


def tool(
    name: str,
    *,
    task: str,
    description: str,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any],
    params: type[BaseModel] = NoParams,
    version: str = "1",
    seeded: bool = False,
    cacheable: bool = True,
    register: bool = True,
) -> Callable[[Callable[..., Any]], Tool]:
    """Decorator: build a :class:`Tool` from a function and register it by name."""

    def wrap(fn: Callable[..., Any]) -> Tool:
        try:
            spec = ToolSpec(
                name=name, task=task, description=description, inputs=_ports(inputs), outputs=_ports(outputs),
                params=params, version=version, seeded=seeded, cacheable=cacheable,
            )
        except ValidationError as exc:
            raise ToolRegistrationError(f"invalid spec: {_short_validation(exc)}", tool=name) from exc
        t = Tool(spec, fn)
        if register:
            from orchestrator.registry import default_registry

            default_registry.register(t)
        return t

    return wrap
