"""Tiny diffusion checkpoints: Stable Diffusion (image) and text-to-video UNet3D.

Shapes follow the diffusers test suite's dummy components (widths 4-32, one or two
blocks), with a locally built CLIP tokenizer. The VAE has two blocks, so latents
are 1/2 the image side (real SD: 1/8); sizes stay multiples of 8 either way.
"""

from __future__ import annotations

from pathlib import Path

from . import zoo_model
from ._tokenizers import clip_tokenizer, write_bpe_files


def _clip_text_encoder(vocab_size: int, hidden: int) -> object:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=vocab_size, hidden_size=hidden,
        intermediate_size=2 * hidden, num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=77,
        projection_dim=hidden, hidden_act="gelu", layer_norm_eps=1e-5,
    )
    return CLIPTextModel(config)


def _scheduler() -> object:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
        steps_offset=1,
    )


def _vae(widths: tuple[int, int], groups: int, sample_size: int) -> object:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=widths, in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=groups,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        sample_size=sample_size,
    )


def sd_components(unet_in_channels: int = 4) -> dict[str, object]:
    """Seeded Stable Diffusion 1.x components (UNet2D, VAE, CLIP text, Euler), as pipeline keywords.

    ``unet_in_channels`` is 4 for text-to-image, 8 for InstructPix2Pix (noise + image latents).
    """
    import torch
    from diffusers import UNet2DConditionModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=unet_in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4,
    )
    vae = _vae((8, 16), 4, 64)
    return {
        "unet": unet, "vae": vae, "text_encoder": _clip_text_encoder(len(tokenizer), 32), "tokenizer": tokenizer,
        "scheduler": _scheduler(), "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
    }


def save_pipeline(pipe: object, path: Path) -> None:
    """``save_pretrained`` plus the BPE files a slow CLIP tokenizer loads from."""
    pipe.save_pretrained(path)  # type: ignore[attr-defined]
    write_bpe_files(pipe.tokenizer, path / "tokenizer")  # type: ignore[attr-defined]


@zoo_model("tiny-sd", version="1")
def build_tiny_sd(path: Path) -> None:
    """Stable Diffusion components (UNet2D, VAE, CLIP text, Euler) for text-to-image and image-to-image."""
    from diffusers import StableDiffusionPipeline

    save_pipeline(StableDiffusionPipeline(**sd_components(4)), path)


@zoo_model("tiny-t2v", version="1")
def build_tiny_t2v(path: Path) -> None:
    """Text-to-video components (UNet3D, VAE, CLIP text, Euler), zeroscope/damo layout."""
    import torch
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=2,
    )
    vae = _vae((4, 8), 2, 32)
    text_encoder = _clip_text_encoder(len(tokenizer), 16)
    pipe = TextToVideoSDPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=_scheduler())
    save_pipeline(pipe, path)
