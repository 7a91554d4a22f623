"""Visual question answering (``image.vqa``, ``visual-question-answering``).

Two kinds of checkpoints work through ``AutoModelForVisualQuestionAnswering``:
answer classifiers (ViLT, e.g. ``dandelin/vilt-b32-finetuned-vqa``: scores over a
fixed answer vocabulary, so the top ``k`` answers come with probabilities) and
generative models (BLIP, e.g. ``Salesforce/blip-vqa-base``: the answer is decoded
text, reported with no score).

    >>> from tools.visual_qa import answer_questions                    # doctest: +SKIP
    >>> answer_questions([img], ["what color is the car?"]).answers[0][0]
    {'answer': 'red', 'score': 0.93}
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import ToolInputError
from orchestrator.tool import Port, ToolContext, tool

from ._encoding import MODEL_FIELD, batched, encoder, rgb, to_device

__all__ = ["Answers", "VQAParams", "answer_questions"]

TASK, TOOL, BACKEND = "visual-question-answering", "image.vqa", "transformers.vqa"


class VQAParams(BaseModel):
    """Parameters of ``image.vqa``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = MODEL_FIELD
    top_k: int = Field(3, ge=1, le=20, description="Answers listed on the 'answers' port (classifier models).")
    max_tokens: int | None = Field(
        None, ge=1, le=128, description="Longest answer, in tokens (generative models; None: profile, else 20)."
    )
    batch_size: int = Field(8, ge=1, le=64, description="Image-question pairs per forward pass.")


@dataclass
class Answers:
    """Ranked answers per question: ``[[{"answer", "score"}, …], …]`` (score None for generated text)."""

    answers: list[list[dict[str, Any]]]
    model: str
    seconds: float = 0.0


def _question(text: Any, i: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ToolInputError(f"question {i} on port 'question' is empty or not text", tool=TOOL, port="question")
    return text.strip()


def answer_questions(
    images: Sequence[Any],
    questions: Sequence[str],
    params: VQAParams | Mapping[str, Any] | None = None,
    *,
    ctx: Any = None,
) -> Answers:
    """Answer ``questions[i]`` about ``images[i]`` (one image for all questions is fine too)."""
    import torch

    p = params if isinstance(params, VQAParams) else VQAParams.model_validate(dict(params or {}))
    texts = [_question(q, i) for i, q in enumerate(questions)]
    pictures = [rgb(im, tool=TOOL, ctx=ctx) for im in images]
    if len(pictures) == 1 and len(texts) > 1:
        pictures = pictures * len(texts)
    if len(pictures) != len(texts) or not texts:
        raise ToolInputError(f"{len(pictures)} images for {len(texts)} questions: give one image, or one per question", tool=TOOL)
    enc = encoder(ctx, TASK, TOOL, p.model, BACKEND)
    started = time.perf_counter()
    out: list[list[dict[str, Any]]] = []
    max_tokens = int(enc.option(p, "max_tokens", 20))
    with enc.use() as (model, processor):
        generative = bool(getattr(model, "can_generate", lambda: False)())
        for pairs in batched(list(zip(pictures, texts, strict=True)), p.batch_size):
            inputs = processor(images=[a for a, _ in pairs], text=[q for _, q in pairs], return_tensors="pt",
                               padding=True, truncation=True)
            inputs = to_device(inputs, model)
            with torch.inference_mode():
                if generative:
                    ids = model.generate(**inputs, max_new_tokens=max_tokens)
                    out += [[{"answer": t.strip(), "score": None}] for t in processor.batch_decode(ids, skip_special_tokens=True)]
                    continue
                logits = model(**inputs).logits.float()
            single_label = getattr(model.config, "problem_type", None) == "single_label_classification"
            probs = logits.softmax(-1) if single_label else logits.sigmoid()  # ViLT: multi-label (sigmoid)
            scores, idx = probs.topk(min(p.top_k, probs.shape[-1]), dim=-1)
            labels = model.config.id2label
            out += [
                [{"answer": str(labels[int(j)]), "score": round(float(s), 6)} for s, j in zip(row_s, row_i, strict=True)]
                for row_s, row_i in zip(scores, idx, strict=True)
            ]
    return Answers(out, enc.model, time.perf_counter() - started)


@tool(
    TOOL,
    task=TASK,
    description="Answer a question about an image (visual question answering, ViLT/BLIP style).",
    inputs={
        "image": Port(name="image", modality="image", description="The picture the question is about."),
        "question": Port(name="question", modality="text", description="A question in natural language."),
    },
    outputs={
        "text": Port(name="text", modality="text", description="The best answer."),
        "answers": Port(name="answers", modality="json", description='Ranked answers: [{"answer", "score"}].'),
    },
    params=VQAParams,
)
def visual_qa(image: Any, question: Any, *, params: VQAParams, ctx: ToolContext) -> dict[str, Any]:
    """Image plus question to answer."""
    ranked = answer_questions([image], [question], params, ctx=ctx).answers[0]
    return {"text": ranked[0]["answer"], "answers": ranked}
