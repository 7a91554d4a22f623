"""Shared plumbing for the encoders: model choice, backends, tensors, audio windows.

Not a tool module (the leading underscore keeps the registry from importing it as
one). Every encoder resolves its checkpoint the same way: the tool's ``model``
param, else the active profile's candidate for the tool's task, loaded once by the
model manager (``ctx.models``) through one of the ``transformers.*`` backends
registered here. Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from orchestrator.errors import ToolInputError

__all__ = [
    "MODEL_FIELD",
    "Encoding",
    "audio_windows",
    "batched",
    "encoder",
    "features",
    "mono_at",
    "register_backends",
    "rgb",
    "to_device",
]

logger = logging.getLogger("orchestrator.tools.encoders")

MODEL_FIELD = Field(
    None,
    description="Checkpoint to use: a hub id, a local folder or zoo:<name>. None: the active profile's choice.",
)


# ---------------------------------------------------------------- backends

_BACKENDS = {
    # backend name: (transformers model class, processor class, description)
    "transformers.image-to-text": ("AutoModelForImageTextToText", "AutoProcessor", "captioning / OCR (BLIP, GIT, TrOCR)"),
    "transformers.vqa": ("AutoModelForVisualQuestionAnswering", "AutoProcessor", "visual question answering (ViLT, BLIP)"),
    "transformers.speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "AutoProcessor", "speech recognition (Whisper)"),
    "transformers.dual-encoder": ("AutoModel", "AutoProcessor", "CLIP / CLAP style dual encoders"),
    "transformers.object-detection": ("AutoModelForObjectDetection", "AutoImageProcessor", "object detection (DETR)"),
    "transformers.vision-model": ("AutoModel", "AutoImageProcessor", "vision feature maps (style transfer CNN)"),
}


def _bundle_loader(model_cls: str, processor_cls: str) -> Any:
    def load(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> Any:
        import transformers

        from orchestrator.runtime import ModelBundle

        kwargs = {k: options[k] for k in ("revision", "subfolder") if options.get(k) is not None}
        processor = getattr(transformers, processor_cls).from_pretrained(source, **kwargs)
        model = getattr(transformers, model_cls).from_pretrained(source, dtype=dtype, **kwargs)
        return ModelBundle(model.to(device).eval(), processor)

    load.__name__ = f"load_{model_cls}"
    return load


_registered = False  # backends are never unregistered: once done, every encoder call skips the check


def register_backends() -> None:
    """Register the encoders' ``transformers.*`` model backends (idempotent)."""
    global _registered
    if _registered:
        return
    from orchestrator.runtime import list_backends, register_backend

    known = list_backends()
    for name, (model_cls, processor_cls, description) in _BACKENDS.items():
        if name not in known:
            register_backend(name, _bundle_loader(model_cls, processor_cls), description=description)
    _registered = True


# ---------------------------------------------------------------- model choice


@dataclass
class Encoding:
    """What an encoder resolved before loading: the task, the model choice and the manager."""

    task: str
    tool: str
    choice: Any  # orchestrator.runtime.ModelChoice
    models: Any  # orchestrator.runtime.ModelManager
    backend: str

    @property
    def model(self) -> str:
        return self.choice.model

    def option(self, params: Any, name: str, default: Any = None) -> Any:
        """``params.<name>`` if set, else the profile option, else ``default``."""
        value = getattr(params, name, None)
        return self.choice.option(name, default) if value is None else value

    @contextlib.contextmanager
    def use(self, *, exclusive: bool = True) -> Iterator[Any]:
        """Lease the loaded ``ModelBundle(model, processor)`` for a block."""
        with self.models.use(self.choice, self.backend, task=self.task, exclusive=exclusive) as bundle:
            yield bundle


def encoder(ctx: Any, task: str, tool: str, model: str | None, backend: str, *, profile_task: str | None = None) -> Encoding:
    """Resolve the checkpoint for ``tool`` (params ``model``, else the profile's choice for ``task``).

    ``profile_task`` looks the choice up under another task (the CLIP embed tools share
    the zero-shot classifier's entry when the profile has none of their own).
    A profile entry's ``backend`` option replaces ``backend`` (``faster-whisper`` for
    ``speech.transcribe``, ``tesseract`` for ``image.ocr``).
    Raises ConfigError / ModelNotFound before anything heavy loads.
    """
    from orchestrator.runtime import get_model_manager, get_profile

    register_backends()
    profile = getattr(ctx, "profile", None) or get_profile()
    manager = getattr(ctx, "models", None) or get_model_manager()
    lookup = task
    if profile_task is not None and not any(c.tool == tool for c in profile.candidates(task)):
        lookup = profile_task
    tool_filter = tool if any(c.tool == tool for c in profile.candidates(lookup)) else None
    choice = profile.resolve(lookup, tool=tool_filter, model=model)
    backend = str(choice.option("backend") or backend)  # a profile entry may pick another backend
    manager.key(choice, backend, task=task)  # checks the reference now: ModelNotFound names task and model
    _note(ctx, choice, task)
    return Encoding(task=task, tool=tool, choice=choice, models=manager, backend=backend)


def _note(ctx: Any, choice: Any, task: str) -> None:
    """Record the resolved model where the engine can add it to provenance (``ctx.provenance``)."""
    from decoders._common import record_provenance

    record_provenance(ctx, model=choice.model, task=task)


# ---------------------------------------------------------------- tensors


def to_device(inputs: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Processor outputs moved to the model's device; floating tensors cast to its dtype."""
    import torch

    device, dtype = model.device, model.dtype
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
        out[key] = value
    return out


def features(output: Any) -> Any:
    """Projected embeddings from ``get_*_features``: a tensor (transformers 4) or its ``pooler_output`` (5)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise ToolInputError(f"the model returned {type(output).__name__} without pooled embeddings")
    return pooled


def batched(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + max(1, size)])


# ---------------------------------------------------------------- media


def rgb(image: Any, *, tool: str, port: str = "image", ctx: Any = None) -> Any:
    """An RGB ``PIL.Image`` (alpha flattened on white), or ToolInputError naming the port."""
    from PIL import Image

    from ._media import as_image

    img = as_image(image, tool=tool, port=port, ctx=ctx)
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img


def mono_at(audio: Any, rate: int, *, tool: str, port: str = "audio", ctx: Any = None, silence: float = 1e-4) -> np.ndarray:
    """Mono float32 samples at ``rate`` (any input rate resampled, channels averaged).

    Zero-length and silent audio (peak below ``silence``) raise ToolInputError:
    there is nothing for a model to hear.
    """
    from ._media import as_audio, peak, resample

    a = as_audio(audio, tool=tool, port=port, ctx=ctx)
    samples = a.mono().astype(np.float32)
    if peak(samples) < silence:
        raise ToolInputError(
            f"port {port!r}: audio is silent (peak amplitude {peak(samples):.2g} over {a.duration:.2f}s); "
            "nothing to recognise",
            tool=tool, port=port,
        )
    return resample(samples, a.sample_rate, rate)


def audio_windows(samples: np.ndarray, rate: int, seconds: float) -> list[tuple[float, np.ndarray]]:
    """Split into consecutive windows of at most ``seconds``: ``[(start_s, samples)]``.

    A last window shorter than a tenth of a second is dropped when there are others,
    so a 30.05 s clip is not read as a second window of 50 ms.
    """
    size = max(1, int(round(seconds * rate)))
    out = [(start / rate, samples[start : start + size]) for start in range(0, max(1, len(samples)), size)]
    if len(out) > 1 and len(out[-1][1]) < rate // 10:
        out.pop()
    return out
