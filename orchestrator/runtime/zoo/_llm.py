"""Tiny chat model: a two-layer Qwen2 causal LM with a ChatML template (for the local chat client)."""

from __future__ import annotations

from pathlib import Path

from . import zoo_model
from ._tokenizers import chat_tokenizer


@zoo_model("tiny-chat", version="1")
def build_tiny_chat(path: Path) -> None:
    """Qwen2ForCausalLM (hidden 32, 2 layers) with a byte-level BPE tokenizer and ChatML chat template."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = chat_tokenizer(path)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=pad, eos_token_id=eos, pad_token_id=pad,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, max_new_tokens=32)
    model.save_pretrained(path)
