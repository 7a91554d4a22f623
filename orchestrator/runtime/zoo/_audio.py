"""Tiny audio checkpoints: AudioLDM (text-to-audio) and MusicGen (text-to-music).

Both run at 16 kHz. The AudioLDM vocoder upsamples by 64 (250 mel frames a second);
the MusicGen codec has a hop of 160 samples (100 frames a second, 2 codebooks of 64).
"""

from __future__ import annotations

from pathlib import Path

from . import zoo_model
from ._diffusion import save_pipeline
from ._tokenizers import roberta_tokenizer, t5_tokenizer


@zoo_model("tiny-audioldm", version="1")
def build_tiny_audioldm(path: Path) -> None:
    """AudioLDM components (UNet2D with CLAP class embedding, mel VAE, CLAP text, SpeechT5 HiFi-GAN)."""
    import torch
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    tokenizer = roberta_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16), attention_head_dim=4, norm_num_groups=4,
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=16, class_embeddings_concat=True,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=1, out_channels=1, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        bos_token_id=0, pad_token_id=1, eos_token_id=2, vocab_size=len(tokenizer), hidden_size=16,
        intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=80,
        projection_dim=16, layer_norm_eps=1e-5,
    ))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 8],
        upsample_kernel_sizes=[16, 16], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
    )
    pipe = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder)
    save_pipeline(pipe, path)


@zoo_model("tiny-musicgen", version="3")
def build_tiny_musicgen(path: Path) -> None:
    """MusicGen (T5 text encoder, EnCodec codec, 2-codebook decoder) with its processor."""
    import torch
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        GenerationConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
    )

    tokenizer = t5_tokenizer()
    codebook_size, codebooks, rate = 64, 2, 16000
    text = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    codec = EncodecConfig(
        sampling_rate=rate, audio_channels=1, hidden_size=8, num_filters=4, num_residual_layers=1,
        upsampling_ratios=[8, 5, 4], codebook_size=codebook_size, num_lstm_layers=1,
        target_bandwidths=[1.2],  # 1200 bit/s at 100 frames/s of 6-bit codes: 2 codebooks
    )
    assert codec.num_quantizers == codebooks, codec.num_quantizers
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size, num_codebooks=codebooks, hidden_size=16, ffn_dim=32, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=4096, pad_token_id=codebook_size, bos_token_id=codebook_size,
    )
    config = MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)
    config.decoder_start_token_id = codebook_size
    config.pad_token_id = codebook_size
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config)
    with torch.no_grad():  # EnCodec codebooks start at zero (k-means fills them in training): make codes audible
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
        # cross-attention at the default std (0.02) moves the logits by ~1e-4: every prompt would sample
        # the same codes. Stronger text conditioning makes the output follow the prompt, as trained ones do.
        for name, weight in model.decoder.named_parameters():
            if "encoder_attn." in name and name.endswith("weight"):
                weight.normal_(0.0, 0.5)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=codebook_size, pad_token_id=codebook_size, bos_token_id=codebook_size,
        do_sample=True, guidance_scale=3.0, max_length=1024,
    )
    model.save_pretrained(path)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=rate), tokenizer=tokenizer,
    )
    processor.save_pretrained(path)
