"""Backends: named loaders that turn a checkpoint (path or hub id) into a ready model.

A loader is ``fn(source, *, device, dtype, offload, options) -> object``; the model
manager calls it once per key and owns the result. Loaders for optional extras
declare the import they need, so a missing extra is reported as
:class:`~orchestrator.errors.BackendUnavailable` before anything loads.
Other packages register their own with :func:`register_backend`.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from dataclasses import dataclass
from typing import Any, NamedTuple

from orchestrator.errors import BackendUnavailable, ConfigError

__all__ = ["Backend", "ModelBundle", "check_backend", "get_backend", "list_backends", "register_backend"]

Loader = Callable[..., Any]

#: options that change which weights load (part of the cache key); the rest are generation defaults
LOAD_OPTIONS = ("variant", "revision", "use_safetensors", "subfolder")


class ModelBundle(NamedTuple):
    """A model with its pre/post-processor (tokenizer, processor)."""

    model: Any
    processor: Any


@dataclass(frozen=True)
class Backend:
    name: str
    loader: Loader
    requires: tuple[str, ...] = ()
    extra: str | None = None
    description: str = ""
    imports: tuple[str, ...] = ()
    """``module`` or ``module:attribute`` names the loader imports on first use; the manager
    imports them (runtime/_imports.py) before taking a load lock."""
    imports_of: Callable[[str], tuple[str, ...]] | None = None
    """More of those for one checkpoint (a diffusers pipeline's component classes)."""

    def missing(self) -> list[str]:
        return [mod for mod in self.requires if importlib.util.find_spec(mod) is None]


_BACKENDS: dict[str, Backend] = {}


def register_backend(
    name: str, loader: Loader, *, requires: tuple[str, ...] = (), extra: str | None = None, description: str = "",
    replace: bool = False, imports: tuple[str, ...] = (), imports_of: Callable[[str], tuple[str, ...]] | None = None,
) -> Backend:
    """Register ``loader`` under ``name`` (``requires``: importable modules it needs; ``imports``:
    what it imports on first use, done before the load lock is taken)."""
    if name in _BACKENDS and not replace and _BACKENDS[name].loader is not loader:
        raise ConfigError(f"a model backend named {name!r} is already registered", backend=name)
    backend = Backend(name, loader, tuple(requires), extra, description, tuple(imports), imports_of)
    _BACKENDS[name] = backend
    return backend


def get_backend(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ConfigError(f"no model backend named {name!r} (known: {sorted(_BACKENDS)})", backend=name) from None


def list_backends() -> dict[str, Backend]:
    return dict(sorted(_BACKENDS.items()))


def check_backend(name: str, *, model: str | None = None, task: str | None = None) -> Backend:
    """The backend, or :class:`BackendUnavailable` if a module it needs is not installed."""
    backend = get_backend(name)
    missing = backend.missing()
    if missing:
        hint = f" (pip install 'any2any-orchestrator[{backend.extra}]')" if backend.extra else ""
        raise BackendUnavailable(
            f"model backend {name!r} needs {', '.join(missing)}, which is not installed{hint}",
            backend=name, model=model, task=task,
        )
    return backend


def _load_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in LOAD_OPTIONS if options.get(k) is not None}


def _place_pipeline(pipe: Any, device: str, offload: bool) -> Any:
    pipe.set_progress_bar_config(disable=True)
    if offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _diffusers_dtype_kw() -> str:
    """``dtype`` on diffusers that accept it (and deprecate ``torch_dtype``), else ``torch_dtype``."""
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


def _diffusers(cls_name: str) -> Loader:
    def load(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> Any:
        import diffusers

        cls = getattr(diffusers, cls_name)
        pipe = cls.from_pretrained(source, **{_diffusers_dtype_kw(): dtype}, **_load_kwargs(options))
        return _place_pipeline(pipe, device, offload)

    load.__name__ = f"load_{cls_name}"
    return load


def _diffusers_imports(cls_name: str) -> tuple[str, ...]:
    return ("torch", f"diffusers:{cls_name}")


def _pipeline_imports(source: str) -> tuple[str, ...]:
    """``library:Class`` for the pipeline and each diffusers / transformers component that a local
    pipeline folder's model_index.json names (other libraries are left to the loader)."""
    try:
        doc = json.loads((Path(source) / "model_index.json").read_text())
    except (OSError, ValueError):
        return ()
    names = [f"diffusers:{doc['_class_name']}"] if isinstance(doc.get("_class_name"), str) else []
    for value in doc.values():
        if (isinstance(value, list) and len(value) == 2 and value[0] in ("diffusers", "transformers")
                and isinstance(value[1], str)):
            names.append(f"{value[0]}:{value[1]}")
    return tuple(names)


def _transformers_imports(*cls_names: str) -> tuple[str, ...]:
    return ("torch", *(f"transformers:{name}" for name in cls_names))


def _transformers_bundle(model_cls: str, processor_cls: str) -> Loader:
    def load(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> ModelBundle:
        import transformers

        kwargs = _load_kwargs(options)
        kwargs.pop("variant", None)
        processor = getattr(transformers, processor_cls).from_pretrained(source, **kwargs)
        model = getattr(transformers, model_cls).from_pretrained(source, dtype=dtype, **kwargs)
        model = model.to(device).eval()
        return ModelBundle(model, processor)

    load.__name__ = f"load_{model_cls}"
    return load


def _audiocraft_musicgen(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> Any:
    from audiocraft.models import MusicGen  # type: ignore[import-not-found]

    return MusicGen.get_pretrained(source, device=device)


register_backend("diffusers", _diffusers("DiffusionPipeline"), description="any diffusers pipeline (model_index.json)",
                 imports=_diffusers_imports("DiffusionPipeline"), imports_of=_pipeline_imports)
register_backend("diffusers.text2img", _diffusers("AutoPipelineForText2Image"), description="AutoPipelineForText2Image",
                 imports=_diffusers_imports("AutoPipelineForText2Image"), imports_of=_pipeline_imports)
register_backend("diffusers.img2img", _diffusers("AutoPipelineForImage2Image"), description="AutoPipelineForImage2Image",
                 imports=_diffusers_imports("AutoPipelineForImage2Image"), imports_of=_pipeline_imports)
register_backend("transformers.musicgen", _transformers_bundle("MusicgenForConditionalGeneration", "AutoProcessor"),
                 description="MusicGen through transformers",
                 imports=_transformers_imports("MusicgenForConditionalGeneration", "AutoProcessor"))
register_backend("transformers.vits", _transformers_bundle("VitsModel", "AutoTokenizer"), description="VITS / MMS-TTS",
                 imports=_transformers_imports("VitsModel", "AutoTokenizer"))
register_backend("transformers.causal-lm", _transformers_bundle("AutoModelForCausalLM", "AutoTokenizer"),
                 description="a causal LM with its tokenizer (chat)",
                 imports=_transformers_imports("AutoModelForCausalLM", "AutoTokenizer"))
register_backend("audiocraft.musicgen", _audiocraft_musicgen, requires=("audiocraft",), extra="audiocraft",
                 description="MusicGen through audiocraft (optional extra; pins an old torch)")
