"""MiniLM on ONNX Runtime: the planner's encoder without torch on the planning path.

The packaged sentence-transformers model (a BERT encoder, mean pooling, unit norm) is
exported to ONNX once per machine with torch's exporter, optionally quantized to int8
(:func:`_quantize`), and kept under ``Settings.planner_cache_path / "models"``. Later
processes load only that file, ONNX Runtime and the ``tokenizers`` tokenizer: no torch,
transformers or sentence-transformers import, and about twice the sentences per CPU
second (the fp32 export gives the same vectors as the torch model, to 1e-6).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers

__all__ = ["INT8_VARIANT", "OnnxUnavailable", "OnnxSentenceModel", "onnx_available"]

logger = logging.getLogger("orchestrator.agent.offline")

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

OUTLIER_CHANNELS = 4
"""Input channels of each int8 MatMul kept in fp32: those where the calibration activations peak."""

_CALIBRATION = (
    "The weather was cold, so we stayed inside and read books all afternoon.",
    "Could you help me write a short letter to my landlord about the broken heater?",
    "A cat is sleeping on the windowsill in the morning sun.",
    "Summarize the main points of this report in three sentences.",
    "What time does the train to the airport leave on Sundays?",
    "She played the piano while her brother sang an old folk song.",
    "Please convert the attached spreadsheet into a chart showing monthly sales.",
    "The museum opens at nine and closes early on public holidays.",
    "How many kilometres is it from the coast to the mountains?",
    "Draw a red bicycle leaning against a brick wall.",
    "I would like to hear this paragraph read aloud in a calm voice.",
    "Translate the following sentence into Spanish: where is the library?",
    "The committee approved the new budget after a long debate.",
    "Find pictures of old lighthouses along the northern shore.",
    "My phone keeps turning off when the battery is at twenty percent.",
    "He cut the video down to the best thirty seconds and added music.",
    "Is this mushroom safe to eat, based on the photo I sent?",
    "Thanks a lot, that was really helpful!",
    "Record a new voice message and send it to the team.",
    "The children built a sandcastle and decorated it with shells.",
    "List the ingredients I need for a vegetable soup.",
    "Make the image brighter and crop it to a square.",
    "The stock market fell sharply after the announcement.",
    "Write a poem about autumn leaves falling in the park.",
    "Can you tell me what this document says about refunds?",
    "hello",
    "ok",
    "A quiet street at night, lit by a single lamp.",
    "Turn up the volume of the background music and remove the noise.",
    "Which of these two sentences sounds more formal?",
)
"""Generic sentences (none from a benchmark) on which the int8 export finds its outlier channels."""

WEIGHT_LEVELS = 63
"""int8 weights use -63..63 (7 bits): on CPUs without VNNI, ONNX Runtime multiplies uint8 activations by
int8 weights with an instruction whose 16-bit pair sums overflow at full range; 7 bits never do, so no
CPU loses accuracy to it (measured on AVX2: cosine to fp32 0.972 at worst with 8-bit weights, 0.995
with 7). The fp32 parts between the int8 products still round per instruction set: vectors agree
closely across CPUs, not to the bit."""

INT8_VARIANT = "int8o{}w{}-{}".format(
    OUTLIER_CHANNELS, WEIGHT_LEVELS.bit_length() + 1, hashlib.sha256("\n".join(_CALIBRATION).encode()).hexdigest()[:6])
"""Names the int8 export's recipe (its file and its vectors): a new recipe is a new file."""


BATCH_COST = 32
"""What one more batch costs, in padded tokens (smaller batches run less efficiently): :func:`_cuts`."""


def _cuts(lengths: Sequence[int], most: int) -> list[int]:
    """Where to cut texts sorted by token count into batches of at most ``most``: the fewest padded
    tokens, each batch counting :data:`BATCH_COST` more (``[0, ..., len(lengths)]``)."""
    best = [0] + [sys.maxsize] * len(lengths)
    start = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for begin in range(max(0, end - most), end):
            cost = best[begin] + lengths[end - 1] * (end - begin) + BATCH_COST
            if cost < best[end]:
                best[end], start[end] = cost, begin
    cuts = [len(lengths)]
    while cuts[-1]:
        cuts.append(start[cuts[-1]])
    return cuts[::-1]


class OnnxUnavailable(RuntimeError):
    """The model cannot run on ONNX Runtime here (a package missing, an export that failed, another pooling)."""


def onnx_available() -> bool:
    """Whether ONNX Runtime and the tokenizers package are installed (found, not imported)."""
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in ("onnxruntime", "tokenizers"))


@contextlib.contextmanager
def _replacing(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write; it replaces ``dest`` when the block ends without error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.{threading.get_ident()}.tmp{dest.suffix}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _need_onnx() -> None:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise OnnxUnavailable("the first ONNX export needs the `onnx` package (pip install onnx)")


def _export(model_dir: Path, dest: Path) -> None:
    """Export the transformer of the sentence-transformers folder ``model_dir`` to ``dest`` (atomic)."""
    _need_onnx()
    from orchestrator.runtime._imports import ensure_imported

    # the CLI may be importing these in its preload thread: wait for that import, do not race it
    ensure_imported(("torch", "transformers:AutoModel"))
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir)).eval()

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.int64)
    mask = sample.clone()
    mask[1, 5:] = 0  # a padded row, so no all-ones shortcut is traced into the graph
    axes = {"batch": 0, "tokens": 1}
    dynamic = {n: {v: k for k, v in axes.items()} for n in (*_INPUTS, "last_hidden_state")}
    with _replacing(dest) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        torch.onnx.export(_Hidden(), (sample, mask, torch.zeros_like(sample)), str(tmp),
                          input_names=list(_INPUTS), output_names=["last_hidden_state"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)


def _quantize(src: Path, dest: Path, feeds: Callable[[Sequence[str]], Mapping[str, np.ndarray]]) -> None:
    """int8 rewrite of ``src``'s weight MatMuls (atomic).

    Each ``x @ W (+ b)`` becomes ONNX Runtime's ``DynamicQuantizeMatMul`` (int8 weights per output
    column, ``x`` quantized per call) on ``x`` with its :data:`OUTLIER_CHANNELS` peak channels zeroed,
    plus those channels' product in fp32. BERT keeps a few huge activations in fixed channels (up to
    about 30 where the median channel peaks near 2): left in, they set the int8 step of the whole
    tensor. The channels are the ones that peak on :data:`_CALIBRATION` (``feeds`` turns texts into
    model inputs). Against ORT's ``quantize_dynamic`` this lifts the vectors' cosine to fp32 from
    0.992 to 0.999 on average (0.944 to 0.988 at worst), for about 5% more time.
    """
    _need_onnx()
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) == 2}
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    inputs = list(dict.fromkeys(n.input[0] for n in matmuls))
    rewritten = {id(n) for n in matmuls}

    # 1. peak |activation| per channel of each MatMul input, over the calibration texts' real tokens
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in inputs)
    feed = dict(feeds(_CALIBRATION))
    real = feed["attention_mask"].astype(bool)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    peaks = {x: np.abs(v)[real].max(axis=0) for x, v in zip(inputs, sess.run(inputs, feed), strict=True)}
    del probe, sess

    # 2. the rewrite, each new node where its MatMul was
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    biases = {i.name: numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) == 1}
    split: dict[str, tuple[str, str, np.ndarray]] = {}  # MatMul input -> (main part, outlier part, channels)
    folded: set[int] = set()  # ids of the bias Adds taken into their MatMul
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in folded:
            continue
        if id(node) not in rewritten:
            nodes.append(node)
            continue
        x, w = node.input[0], weights[node.input[1]]
        key = node.name.strip("/").replace("/", "_")
        if x not in split:
            idx = np.sort(np.argsort(peaks[x])[-OUTLIER_CHANNELS:]).astype(np.int64)
            keep = np.ones(w.shape[0], dtype=np.float32)
            keep[idx] = 0.0
            graph.initializer.extend([numpy_helper.from_array(keep, f"{key}_keep"),
                                      numpy_helper.from_array(idx, f"{key}_outliers")])
            nodes += [helper.make_node("Mul", [x, f"{key}_keep"], [f"{key}_main"]),
                      helper.make_node("Gather", [x, f"{key}_outliers"], [f"{key}_outl"], axis=-1)]
            split[x] = (f"{key}_main", f"{key}_outl", idx)
        main, outl, idx = split[x]
        inner = w.copy()
        inner[idx] = 0.0
        scale = (np.maximum(np.abs(inner).max(axis=0), 1e-12) / WEIGHT_LEVELS).astype(np.float32)
        quant = np.clip(np.round(inner / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
        graph.initializer.extend([numpy_helper.from_array(quant, f"{key}_wq"),
                                  numpy_helper.from_array(scale, f"{key}_scale"),
                                  numpy_helper.from_array(np.zeros(w.shape[1], np.int8), f"{key}_zp"),
                                  numpy_helper.from_array(w[idx], f"{key}_wout")])
        out, bias = node.output[0], ""
        after = users.get(out, [])
        if len(after) == 1 and after[0].op_type == "Add":  # fold the bias into the int8 MatMul
            other = [i for i in after[0].input if i != out]
            if len(other) == 1 and biases.get(other[0], np.empty(0)).shape == (w.shape[1],):
                out, bias = after[0].output[0], other[0]
                folded.add(id(after[0]))
        nodes += [helper.make_node("DynamicQuantizeMatMul", [main, f"{key}_wq", f"{key}_scale", f"{key}_zp", bias],
                                   [f"{key}_int8"], domain="com.microsoft"),
                  helper.make_node("MatMul", [outl, f"{key}_wout"], [f"{key}_fp32"]),
                  helper.make_node("Add", [f"{key}_int8", f"{key}_fp32"], [out])]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with _replacing(dest) as tmp:
        onnx.save(model, str(tmp))


class OnnxSentenceModel:
    """A mean-pooled, unit-norm sentence encoder (a sentence-transformers folder) on ONNX Runtime.

    ``int8``: run the int8 export (:func:`_quantize`: about 2.4x the fp32 speed here; vectors
    within cosine 0.98 of fp32, 0.998 on average). The export is made on first use in ``cache_dir``
    (needs torch, transformers and onnx once); a damaged file is exported again.
    """

    def __init__(self, model_dir: Path, cache_dir: Path, tag: str, *, int8: bool = False,
                 batch_size: int = 64) -> None:
        self.model_dir = model_dir
        self.int8 = int8
        self.batch_size = batch_size
        self.path = cache_dir / f"{tag}-{INT8_VARIANT if int8 else 'fp32'}.onnx"
        self._fp32 = cache_dir / f"{tag}-fp32.onnx"
        self._sess: onnxruntime.InferenceSession | None = None
        self._tokenizer: tokenizers.Tokenizer | None = None
        self._pad = 0
        self._ready = False
        self._lock = threading.Lock()
        self._check_pooling()

    def _check_pooling(self) -> None:
        try:
            modules = json.loads((self.model_dir / "modules.json").read_text(encoding="utf-8"))
            kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
            pooling = json.loads((self.model_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise OnnxUnavailable(f"{self.model_dir}: not a sentence-transformers folder ({exc})") from exc
        means = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        if kinds != ["Transformer", "Pooling", "Normalize"] or means != ["pooling_mode_mean_tokens"]:
            raise OnnxUnavailable(f"{self.model_dir}: modules {kinds} with pooling {means}; "
                                  "only Transformer, mean pooling, Normalize runs on ONNX here")

    def load(self) -> None:
        """Tokenizer and model file ready (exported first if missing or damaged)."""
        with self._lock:
            if self._ready:
                return
            if self._tokenizer is None:
                import tokenizers

                cfg = json.loads((self.model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
                tok = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                tok.enable_truncation(max_length=int(cfg.get("max_seq_length", 256)))
                tok.no_padding()  # batches are padded by :meth:`_inputs`, after sorting by token count
                pad = tok.token_to_id("[PAD]")
                self._pad = pad if pad is not None else 0
                self._tokenizer = tok
            self._session()  # exports now if needed
            self._ready = True

    def _inputs(self, encodings: Sequence[tokenizers.Encoding]) -> dict[str, np.ndarray]:
        """The model's inputs for ``encodings``, padded to the longest."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = e.attention_mask
            types[row, :len(e.ids)] = e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def _calibration_inputs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        assert self._tokenizer is not None
        return self._inputs(self._tokenizer.encode_batch(list(texts)))

    def _session(self) -> onnxruntime.InferenceSession:
        """The model on one thread (:meth:`encode` runs it from several at once)."""
        if self._sess is not None:
            return self._sess
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        for attempt in range(2):
            if not self.path.exists() or attempt:
                self._make()
            try:
                sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
                break
            except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for a bad file
                if attempt:
                    raise OnnxUnavailable(f"{self.path}: ONNX Runtime cannot load the export ({exc})") from exc
                logger.warning("offline planner: %s is damaged (%s); exporting again", self.path, exc)
        self._sess = sess
        return sess

    def _make(self) -> None:
        logger.info("offline planner: exporting %s to %s (once per machine)", self.model_dir.name, self.path)
        try:
            if self.int8:
                if not self._fp32.exists():
                    _export(self.model_dir, self._fp32)
                _quantize(self._fp32, self.path, self._calibration_inputs)
            else:
                _export(self.model_dir, self.path)
        except OnnxUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - torch's exporter and onnx raise many kinds
            raise OnnxUnavailable(f"exporting {self.model_dir} to ONNX failed: {exc}") from exc

    def encode(self, texts: Sequence[str], threads: int) -> np.ndarray:
        """Unit vectors of ``texts`` (rows), computed on ``threads`` CPU threads.

        fp32: the texts are sorted by token count and cut into batches of at most ``batch_size``, at
        least one per thread, where the fewest tokens are padded (:func:`_cuts`; a batch's size and
        padding never change an fp32 vector). int8: one text per call, as the int8 scale of a call's
        activations is set by all its rows: alone, a text's vector depends on no other text (the same
        plan for a request whatever is planned beside it), for about a fifth more CPU than batches.
        The calls run side by side, single-threaded, on ``threads`` threads: a batch's matrices (a few
        hundred tokens by 384) split badly across threads inside one call.
        """
        self.load()
        assert self._tokenizer is not None
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            sess = self._session()
        encodings = self._tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        if self.int8:  # one text per call: its activations' int8 scale is its own, not its batch's
            cuts = list(range(len(texts) + 1))
        else:
            most = min(self.batch_size, -(-len(texts) // max(1, threads)))  # at least one batch per thread
            cuts = _cuts([len(encodings[j].ids) for j in order], most)
        batches = [order[a:b] for a, b in itertools.pairwise(cuts)]

        def run(rows: np.ndarray) -> np.ndarray:
            feed = self._inputs([encodings[j] for j in rows])
            hidden = sess.run(None, feed)[0]
            weights = feed["attention_mask"][..., None].astype(np.float32)
            vecs = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

        workers = min(max(1, threads), len(batches))
        if workers == 1:
            parts = [run(b) for b in batches]
        else:  # ONNX Runtime lets go of the GIL while it runs; each thread takes every ``workers``-th batch
            with ThreadPoolExecutor(workers, thread_name_prefix="minilm") as pool:  # (one future per thread)
                got = list(pool.map(lambda k: [run(b) for b in batches[k::workers]], range(workers)))
            parts = [got[i % workers][i // workers] for i in range(len(batches))]
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts)
        return out
