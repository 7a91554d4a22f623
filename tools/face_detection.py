"""Face detection (``image.faces``, ``face-detection``) with OpenCV's Haar cascades.

The ``opencv.haar`` backend loads a cascade file, e.g.
``package:cv2/data/haarcascade_frontalface_default.xml`` (shipped with
``opencv-python-headless`` 4.x). Real, offline, milliseconds on a CPU; frontal faces
only. The tool returns the boxes and the picture with the boxes drawn.

    >>> from tools.face_detection import detect_faces                       # doctest: +SKIP
    >>> detect_faces(photo)
    [{'box': {'xmin': 170, 'ymin': 70, 'xmax': 260, 'ymax': 160}, 'score': 1.0}]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import ModelLoadError
from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, encoder, rgb

__all__ = ["FaceParams", "detect_faces", "load_haar_cascade"]

TASK, TOOL, BACKEND = "face-detection", "image.faces", "opencv.haar"


class FaceParams(BaseModel):
    """Parameters of ``image.faces``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    min_size: int = Field(24, ge=8, le=4096, description="Smallest face side, in pixels.")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="Image pyramid step (smaller: slower, finds more).")
    min_neighbors: int = Field(5, ge=0, le=50, description="Overlapping hits needed to keep a face (higher: stricter).")
    max_faces: int = Field(100, ge=1, le=10_000, description="Most faces reported, largest first.")


@dataclass
class HaarCascade:
    classifier: Any
    path: str
    resident_bytes: int = 0


def load_haar_cascade(source: str, *, device: str, dtype: Any, offload: bool, options: Mapping[str, Any]) -> HaarCascade:
    """Backend loader: an OpenCV cascade ``.xml`` file (CPU)."""
    import cv2

    classifier = cv2.CascadeClassifier(source)
    if classifier.empty():
        raise ModelLoadError(f"OpenCV could not read the cascade {source!r}", model=source, backend=BACKEND, task=TASK)
    return HaarCascade(classifier, source, Path(source).stat().st_size)


def detect_faces(image: Any, params: FaceParams | Mapping[str, Any] | None = None, *, ctx: Any = None) -> list[dict[str, Any]]:
    """Faces in an image, largest first: ``[{"box": {xmin, ymin, xmax, ymax}, "score"}]``."""
    import cv2

    p = params if isinstance(params, FaceParams) else FaceParams.model_validate(dict(params or {}))
    picture = rgb(image, tool=TOOL, ctx=ctx)
    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2GRAY))
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    with enc.use() as cascade:  # exclusive: a CascadeClassifier is not safe to share between threads
        boxes, _levels, weights = cascade.classifier.detectMultiScale3(
            gray, scaleFactor=p.scale_factor, minNeighbors=p.min_neighbors, minSize=(p.min_size, p.min_size),
            outputRejectLevels=True,
        )
    found = [
        {"box": {"xmin": int(x), "ymin": int(y), "xmax": int(x + w), "ymax": int(y + h)},
         "score": round(float(s), 4)}
        for (x, y, w, h), s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True)
    ]
    found.sort(key=lambda f: -(f["box"]["xmax"] - f["box"]["xmin"]) * (f["box"]["ymax"] - f["box"]["ymin"]))
    return found[: p.max_faces]


def _draw(picture: Any, faces: list[dict[str, Any]]) -> Any:
    from PIL import ImageDraw

    out = picture.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, min(out.size) // 150)
    for face in faces:
        b = face["box"]
        draw.rectangle((b["xmin"], b["ymin"], b["xmax"], b["ymax"]), outline=(255, 40, 40), width=width)
    return out


def _register() -> None:
    from orchestrator.runtime import list_backends, register_backend

    if BACKEND not in list_backends():
        register_backend(BACKEND, load_haar_cascade, requires=("cv2",), extra="offline",
                         description="OpenCV Haar cascade (.xml) face detector")


_register()


@tool(
    TOOL,
    task=TASK,
    description="Find the faces in a photo (OpenCV Haar cascade): their boxes, and the photo with the boxes drawn.",
    inputs={"image": Port(name="image", modality="image", description="A photo.")},
    outputs={
        "faces": Port(name="faces", modality="json", description='Faces, largest first: [{"box": {...}, "score"}].'),
        "image": Port(name="image", modality="image", description="The photo with a box around each face."),
    },
    params=FaceParams,
)
def find_faces(image: Any, *, params: FaceParams, ctx: ToolContext) -> dict[str, Any]:
    """Photo to face boxes."""
    faces = detect_faces(image, params, ctx=ctx)
    return {"faces": faces, "image": _draw(rgb(image, tool=TOOL, ctx=ctx), faces)}
