"""MiniLM on ONNX Runtime: the planner's encoder without torch on the planning path.

The packaged sentence-transformers model (a BERT encoder, mean pooling, unit norm) is
exported to ONNX once per machine with torch's exporter, optionally quantized to int8
(dynamic, per channel), and kept under ``Settings.planner_cache_path / "models"``. Later
processes load only that file, ONNX Runtime and the ``tokenizers`` tokenizer: no torch,
transformers or sentence-transformers import, and about twice the sentences per CPU
second (the fp32 export gives the same vectors as the torch model, to 1e-6).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers

__all__ = ["OnnxUnavailable", "OnnxSentenceModel", "onnx_available"]

logger = logging.getLogger("orchestrator.agent.offline")

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


def _export(model_dir: Path, dest: Path) -> None:
    """Export the transformer of the sentence-transformers folder ``model_dir`` to ``dest`` (atomic)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise OnnxUnavailable("the first ONNX export needs the `onnx` package (pip install onnx)")
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


def _quantize(src: Path, dest: Path) -> None:
    """Dynamic int8 quantization of ``src``'s weights, per output channel (atomic)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _replacing(dest) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)


class OnnxSentenceModel:
    """A mean-pooled, unit-norm sentence encoder (a sentence-transformers folder) on ONNX Runtime.

    ``int8``: run the int8 export (about 2.4x the fp32 speed here; vectors within cosine 0.97
    of fp32). The export is made on first use in ``cache_dir`` (needs torch, transformers and
    onnx once); a damaged file is exported again.
    """

    def __init__(self, model_dir: Path, cache_dir: Path, tag: str, *, int8: bool = False,
                 batch_size: int = 64) -> None:
        self.model_dir = model_dir
        self.int8 = int8
        self.batch_size = batch_size
        self.path = cache_dir / f"{tag}-{'int8' if int8 else 'fp32'}.onnx"
        self._fp32 = cache_dir / f"{tag}-fp32.onnx"
        self._sessions: dict[int, onnxruntime.InferenceSession] = {}
        self._tokenizer: tokenizers.Tokenizer | None = None
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
            if self._tokenizer is not None:
                return
            import tokenizers

            cfg = json.loads((self.model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
            tok = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            tok.enable_truncation(max_length=int(cfg.get("max_seq_length", 256)))
            pad = tok.token_to_id("[PAD]")
            tok.enable_padding(pad_id=pad if pad is not None else 0, pad_token="[PAD]")
            from orchestrator.runtime import cpu_share

            with cpu_share() as threads:  # the session the first call will use; exports now if needed
                self._session(threads)
            self._tokenizer = tok

    def _session(self, threads: int) -> onnxruntime.InferenceSession:
        got = self._sessions.get(threads)
        if got is not None:
            return got
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self._sessions[threads] = sess
        return sess

    def _make(self) -> None:
        logger.info("offline planner: exporting %s to %s (once per machine)", self.model_dir.name, self.path)
        try:
            if self.int8:
                if not self._fp32.exists():
                    _export(self.model_dir, self._fp32)
                _quantize(self._fp32, self.path)
            else:
                _export(self.model_dir, self.path)
        except OnnxUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - torch's exporter and ORT's quantizer raise many kinds
            raise OnnxUnavailable(f"exporting {self.model_dir} to ONNX failed: {exc}") from exc

    def encode(self, texts: Sequence[str], threads: int) -> np.ndarray:
        """Unit vectors of ``texts`` (rows), computed with ``threads`` intra-op threads."""
        self.load()
        assert self._tokenizer is not None
        with self._lock:
            sess = self._session(max(1, threads))
        order = np.argsort([len(t) for t in texts], kind="stable")  # like lengths share a batch: less padding
        parts: list[np.ndarray] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = [texts[j] for j in order[i:i + self.batch_size]]
            enc = self._tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            types = np.array([e.type_ids for e in enc], dtype=np.int64)
            hidden = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            weights = mask[..., None].astype(np.float32)
            vecs = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            parts.append(vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts)
        return out
