"""Tiny text-to-speech checkpoint: VITS in the MMS layout (character vocabulary, 16 kHz)."""

from __future__ import annotations

from pathlib import Path

from . import zoo_model
from ._tokenizers import vits_tokenizer


@zoo_model("tiny-vits", version="1")
def build_tiny_vits(path: Path) -> None:
    """VITS (text encoder, stochastic duration predictor, flows, HiFi-GAN) with a character tokenizer."""
    import torch
    from transformers import VitsConfig, VitsModel

    tokenizer = vits_tokenizer(path)
    config = VitsConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32,
        flow_size=16, spectrogram_bins=16, upsample_initial_channel=16, upsample_rates=[8, 8],
        upsample_kernel_sizes=[16, 16], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        duration_predictor_filter_channels=16, duration_predictor_num_flows=2, prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2, posterior_encoder_num_wavenet_layers=2, depth_separable_num_layers=2,
        layerdrop=0.0, sampling_rate=16000, pad_token_id=0,
    )
    torch.manual_seed(0)
    model = VitsModel(config)
    model.save_pretrained(path)
