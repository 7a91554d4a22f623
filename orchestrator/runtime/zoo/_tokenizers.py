"""Tokenizers for the tiny zoo, built locally from a small built-in corpus.

Each helper returns a real ``transformers`` tokenizer of the class the full-size
checkpoint uses (CLIP, RoBERTa, T5, VITS, a ChatML byte-level BPE), so
``save_pretrained`` / ``from_pretrained`` behave as they do for real models.
BPE merges are learned here, deterministically; every byte stays in the
vocabulary, so no input is ever out of vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "CORPUS",
    "chat_tokenizer",
    "clip_tokenizer",
    "roberta_tokenizer",
    "t5_tokenizer",
    "vits_tokenizer",
    "write_bpe_files",
]

CORPUS = """
a photo of a cat sitting on a red chair in the sun
a lighthouse at dusk, oil painting, dramatic sky, waves on the rocks
a watercolor of a mountain lake with pine trees and a small boat
a portrait of an astronaut riding a horse on the moon, high detail
a city street at night in the rain, neon lights, cinematic
the sound of rain on a tin roof, thunder in the distance
a dog barking, birds singing in the morning, footsteps on gravel
calm piano music with soft drums and a warm bass line
an upbeat electronic track with synthesizers and a fast beat
a slow jazz ballad with saxophone, brushes on the snare
hello world, this is a test of the speech synthesizer
the quick brown fox jumps over the lazy dog
please describe the image and read the caption out loud
generate a short video of a cat playing with a ball of yarn
what is in this picture? how many people are there?
""".strip().splitlines()


def _train_bpe(pre_tokenizer: Any, normalizer: Any, vocab_size: int, specials: list[str], suffix: str | None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn BPE merges on :data:`CORPUS`, deterministically.

    The vocabulary is the special tokens, every byte-level character (and, with a
    ``suffix`` such as ``</w>``, its end-of-word form), then one token per merge up to
    ``vocab_size``. Ties between equally frequent pairs go to the smallest pair, so a
    rebuilt checkpoint tokenizes exactly as before (the ``tokenizers`` trainer breaks
    ties by hash order, which changes from run to run).
    """
    from collections import Counter

    from tokenizers import pre_tokenizers

    words: Counter[str] = Counter()
    for line in CORPUS:
        text = normalizer.normalize_str(line) if normalizer is not None else line
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text))
    alphabet = sorted(set(pre_tokenizers.ByteLevel.alphabet()) | {ch for w in words for ch in w})
    vocab: dict[str, int] = {}
    for token in [*specials, *alphabet, *((ch + suffix for ch in alphabet) if suffix else ())]:
        vocab.setdefault(token, len(vocab))
    seqs = {w: [*w[:-1], w[-1] + suffix] if suffix else list(w) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(max(0, vocab_size - len(specials) - len(alphabet))):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            seq = seqs[word]
            for pair in zip(seq, seq[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        for word, seq in seqs.items():
            merged, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    merged.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            seqs[word] = merged
    return vocab, merges


def write_bpe_files(tok: Any, path: Path) -> None:
    """Write a BPE tokenizer's classic ``vocab.json`` + ``merges.txt`` next to its ``tokenizer.json``."""
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    _write_vocab_files(path, model["vocab"], merges)  # type: ignore[arg-type]


def _write_vocab_files(path: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (path / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def clip_tokenizer(path: Path | None = None, *, model_max_length: int = 77) -> Any:
    """A byte-level BPE ``CLIPTokenizer`` (bos id 0, eos/pad id 1); saved to ``path`` if given."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import CLIPTokenizer

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(
            Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
            behavior="removed", invert=True,
        ),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    norm = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    vocab, merges = _train_bpe(pre, norm, 400, ["<|startoftext|>", "<|endoftext|>"], "</w>")
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if path is not None:
        tok.save_pretrained(path)
        _write_vocab_files(path, vocab, merges)
    return tok


def roberta_tokenizer(path: Path | None = None, *, model_max_length: int = 77) -> Any:
    """A byte-level BPE ``RobertaTokenizer`` (<s>=0, <pad>=1, </s>=2), as CLAP uses."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab, merges = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), None, 400, specials, None)
    tok = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if path is not None:
        tok.save_pretrained(path)
        _write_vocab_files(path, vocab, merges)
    return tok


def t5_tokenizer(path: Path | None = None, *, model_max_length: int = 64) -> Any:
    """A Unigram ``T5Tokenizer`` (<pad>=0, </s>=1, <unk>=2) over characters and corpus words."""
    from transformers import T5Tokenizer

    pieces: dict[str, float] = {}
    for line in CORPUS:
        for word in line.replace(",", " ,").replace("?", " ?").split():
            pieces.setdefault("\u2581" + word.lower(), -5.0)
    chars = sorted({c for line in CORPUS for c in line.lower() if not c.isspace()} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -8.0) for c in chars] + [("\u2581" + c, -7.0) for c in chars]
    seen = {p for p, _ in vocab}
    vocab += [(p, s) for p, s in sorted(pieces.items()) if p not in seen]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)
    if path is not None:
        tok.save_pretrained(path)
    return tok


def vits_tokenizer(path: Path) -> Any:
    """A character ``VitsTokenizer`` (pad "_" is id 0), the MMS layout; needs a folder for vocab.json."""
    from transformers import VitsTokenizer

    symbols = ["_", " ", *"abcdefghijklmnopqrstuvwxyz", *"'.,!?-"]
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding="utf-8")
    tok = VitsTokenizer(str(vocab_file), pad_token="_", unk_token="<unk>", language="eng", add_blank=True, normalize=True, phonemize=False)
    tok.save_pretrained(path)
    return tok


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_tokenizer(path: Path | None = None) -> Any:
    """A byte-level BPE tokenizer with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab, merges = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), None, 400, specials, None)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=512,
    )
    tok.chat_template = CHAT_TEMPLATE
    if path is not None:
        tok.save_pretrained(path)
    return tok
