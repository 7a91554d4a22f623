"""Shared plumbing for the decoders: model choice, effective params, seeds, progress.

Not a tool module (the leading underscore keeps the registry from importing it as
one). Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, Field

from orchestrator.errors import ParamError, RunCancelled, ToolInputError

__all__ = [
    "MODEL_FIELD",
    "Call",
    "Decoding",
    "begin_call",
    "check_multiple_of",
    "check_range",
    "first_and_all",
    "generators",
    "global_rng",
    "note_provenance",
    "prompts_of",
    "record_provenance",
    "resolve_seed",
    "runtime",
    "step_callback",
]

MODEL_FIELD = Field(
    None,
    description="Checkpoint to use: a hub id, a local folder or zoo:<name>. None: the active profile's choice.",
)


@dataclass
class Decoding:
    """What a decoder resolved before loading anything: the model choice and effective settings."""

    task: str
    tool: str
    choice: Any  # orchestrator.runtime.ModelChoice
    models: Any  # orchestrator.runtime.ModelManager
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.choice.model

    def get(self, params: BaseModel, name: str, default: Any = None) -> Any:
        """``params.<name>`` if set, else the profile option, else ``default``; remembered in settings."""
        value = getattr(params, name, None)
        if value is None:
            value = self.choice.option(name, default)
        self.settings[name] = value
        return value

    def fail(self, param: str, message: str) -> ParamError:
        return ParamError(f"{self.task} with model {self.model!r}: {message}", param=param, task=self.task,
                          model=self.model, tool=self.tool)


def runtime(ctx: Any, task: str, tool: str, model: str | None, *, models: Any = None, profile: Any = None) -> Decoding:
    """Resolve the model choice for ``task`` from the context's profile (or the active one)."""
    from orchestrator.runtime import get_model_manager, get_profile

    prof = profile or getattr(ctx, "profile", None) or get_profile()
    manager = models or getattr(ctx, "models", None) or get_model_manager()
    choice = prof.resolve(task, tool=tool, model=model)
    return Decoding(task=task, tool=tool, choice=choice, models=manager)


P = TypeVar("P", bound=BaseModel)


class Call(NamedTuple, Generic[P]):
    """What a decoder entry point works from once :func:`begin_call` has checked its inputs."""

    params: P
    ctx: Any
    seed: int
    prompts: list[str]
    d: Decoding


def begin_call(
    params_cls: type[P],
    params: P | Mapping[str, Any] | None,
    prompts: Any,
    *,
    task: str,
    tool: str,
    seed: int | None,
    ctx: Any,
    progress: Callable[[int, int], None] | None,
    models: Any = None,
    profile: Any = None,
    max_chars: int | None = None,
) -> Call[P]:
    """The opening every decoder's Python entry point shares.

    Validates ``params``, makes a context when called outside a run (``progress``
    then receives ``(step, total)``), resolves the seed (explicit, else ``ctx.seed``,
    else random), checks the prompts (and their length when ``max_chars`` is set)
    and resolves the model choice, all before any model loads.
    """
    from orchestrator.tool import ToolContext

    p = params if isinstance(params, params_cls) else params_cls.model_validate(dict(params or {}))
    if ctx is None:
        ctx = ToolContext(seed=seed, on_progress=(lambda s, t, _m: progress(s, t)) if progress else None)
    seed = resolve_seed(ctx) if seed is None else seed
    texts = prompts_of(prompts, tool)
    if max_chars is not None:
        for text in texts:
            if len(text) > max_chars:
                raise ToolInputError(f"text is {len(text)} characters; split it (at most {max_chars} per call)",
                                     tool=tool)
    d = runtime(ctx, task, tool, getattr(p, "model", None), models=models, profile=profile)
    return Call(p, ctx, seed, texts, d)


def generators(seed: int, n: int) -> list[Any]:
    """``n`` CPU torch generators seeded ``seed``, ``seed + 1`` …: output ``k`` is the same alone or batched."""
    return seeded_generators([seed + k for k in range(n)])


def seeded_generators(seeds: list[int]) -> list[Any]:
    """One CPU torch generator per seed."""
    import torch

    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def check_multiple_of(d: Decoding, name: str, value: int | None, base: int = 8) -> None:
    if value is not None and value % base:
        lower = value - value % base
        raise d.fail(name, f"{name} must be a multiple of {base}, got {value} (try {lower or base} or {lower + base})")


def check_range(d: Decoding, name: str, value: float | None, low: float | None = None, high: float | None = None,
                *, unit: str = "") -> None:
    if value is None:
        return
    if low is not None and value < low:
        raise d.fail(name, f"{name} must be at least {low}{unit}, got {value}{unit}")
    if high is not None and value > high:
        raise d.fail(name, f"{name} must be at most {high}{unit}, got {value}{unit}")


def prompts_of(text: Any, tool: str) -> list[str]:
    """The prompt(s) on a ``text`` port: one string or a list of strings, none empty."""
    items = [text] if isinstance(text, str) else list(text or [])
    if not items:
        raise ToolInputError("no prompt given on port 'text'", tool=tool)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            where = f"prompt {i}" if len(items) > 1 else "the prompt"
            raise ToolInputError(f"{where} on port 'text' is empty", tool=tool)
    return [s.strip() for s in items]


def resolve_seed(ctx: Any) -> int:
    """``ctx.seed``, or a fresh random seed (recorded in provenance so the output can be remade)."""
    seed = getattr(ctx, "seed", None)
    return int(seed) if seed is not None else secrets.randbits(31)


def note_provenance(ctx: Any, d: Decoding, seed: int | None, **extra: Any) -> None:
    """Put the resolved model and effective settings where the engine can add them to provenance.

    Written to ``ctx.provenance`` (a dict, created if the context has none).
    """
    record_provenance(ctx, model=d.model, task=d.task, seed=seed, settings={**d.settings, **extra})


def record_provenance(ctx: Any, **fields: Any) -> None:
    """Merge ``fields`` into ``ctx.provenance`` (a dict, created if the context has none); no-op without a context.

    The engine adds what it finds there to the output's provenance. Shared by decoders and encoders.
    """
    if ctx is None:
        return
    prov = getattr(ctx, "provenance", None)
    if not isinstance(prov, dict):
        prov = {}
        with contextlib.suppress(AttributeError):
            ctx.provenance = prov
    prov.update(fields)


def step_callback(ctx: Any, total: int, *, new_style: bool) -> Callable[..., Any]:
    """A diffusers step callback that reports ``ctx.progress(step, total)`` and stops on cancel.

    ``new_style``: ``callback_on_step_end(pipe, i, t, kwargs) -> kwargs``; else the old
    ``callback(i, t, latents)``.
    """

    def report(i: int, pipe: Any = None) -> None:
        if ctx is None:
            return
        if getattr(ctx, "cancelled", False):
            raise RunCancelled("cancelled during denoising", node=getattr(ctx, "node", None))
        n = getattr(pipe, "num_timesteps", None) or total
        ctx.progress(min(i + 1, n), n)

    if new_style:
        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            report(i, pipe)
            return kwargs

        return on_step_end

    def on_step(i: int, t: Any, latents: Any) -> None:
        report(i)

    return on_step


_RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def global_rng(seed: int, device: str) -> Iterator[None]:
    """Seed torch's global RNG for one generation and restore it afterwards.

    For models that sample from the global generator (VITS, MusicGen). A process-wide
    lock keeps concurrent generations from drawing from each other's stream, so the
    same seed gives the same bytes under load too.
    """
    import torch

    devices = [torch.cuda.current_device()] if device.startswith("cuda") and torch.cuda.is_available() else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def first_and_all(values: list[Any], single: str, many: str) -> dict[str, Any]:
    """Outputs for a ``single`` port (the first value) and a ``many`` port (all, when more than one)."""
    return {single: values[0], many: values if len(values) > 1 else None}
