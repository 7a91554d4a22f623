"""Tiny encoder checkpoints: captioning, VQA, OCR, speech recognition, CLIP, CLAP, detection.

Each mirrors the architecture and processor of the full-size checkpoint the
``default`` profile names (BLIP, ViLT, TrOCR, Whisper, CLIP, CLAP, DETR) at toy
widths (hidden size 32, one layer, 32-pixel images), with tokenizers built here.
Whisper keeps its real 30-second window (3000 mel frames, 1500 encoder positions)
and its timestamp tokens, so chunking and timestamp parsing run as they do for
``openai/whisper-*``; only the number of mel bins (16) is smaller.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from . import zoo_model
from ._tokenizers import CORPUS, _train_bpe, clip_tokenizer, roberta_tokenizer, write_bpe_files

WHISPER_LANGUAGES = ("en", "de", "fr", "es", "it", "zh")
DETECTION_LABELS = ("N/A", "person", "bicycle", "car", "dog", "cat", "bird", "tree", "chair", "cup")
VQA_ANSWERS = ("yes", "no", "0", "1", "2", "3", "red", "blue", "green", "white", "black", "dog", "cat", "person")


def _bert_tokenizer(**kwargs: Any) -> Any:
    """A lower-casing WordPiece ``BertTokenizer`` over corpus words, characters and ``##`` pieces."""
    from transformers import BertTokenizer

    vocab: dict[str, int] = {}
    words = sorted({w.strip(",.?!").lower() for line in CORPUS for w in line.split()} - {""})
    chars = string.ascii_lowercase + string.digits
    for token in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars, *string.punctuation, *("##" + c for c in chars)]:
        vocab.setdefault(token, len(vocab))
    return BertTokenizer(vocab=vocab, **kwargs)


@zoo_model("tiny-blip-caption", version="3")
def build_tiny_blip_caption(path: Path) -> None:
    """BLIP image captioning (ViT encoder + BERT decoder) with BlipProcessor, as Salesforce/blip-image-captioning-*."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tokenizer = _bert_tokenizer(bos_token="[DEC]")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    dec = tokenizer.convert_tokens_to_ids("[DEC]")
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "encoder_hidden_size": 32, "intermediate_size": 37,
            "projection_dim": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64,
            "bos_token_id": dec, "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "projection_dim": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
            # BLIP's vision default is 1e-10 (trained weights overwrite it): random weights that small
            # make every image look the same, so captions would not depend on the picture
            "initializer_range": 0.02,
        },
        projection_dim=32, image_text_hidden_size=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():  # stronger cross-attention: at std 0.02 greedy decoding ignores the picture
        for name, weight in model.text_decoder.named_parameters():
            if "crossattention.self." in name and name.endswith("weight"):
                weight.normal_(0.0, 0.5)
    model.save_pretrained(path)
    processor = BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer)
    processor.save_pretrained(path)


@zoo_model("tiny-vilt-vqa", version="1")
def build_tiny_vilt_vqa(path: Path) -> None:
    """ViLT visual question answering (answer classifier) with ViltProcessor, as dandelin/vilt-b32-finetuned-vqa."""
    import torch
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltProcessor
    from transformers.models.vilt.image_processing_pil_vilt import ViltImageProcessorPil

    tokenizer = _bert_tokenizer()
    config = ViltConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        image_size=32, patch_size=8, max_position_embeddings=40, max_image_length=-1,
        num_labels=len(VQA_ANSWERS), id2label=dict(enumerate(VQA_ANSWERS)),
        label2id={a: i for i, a in enumerate(VQA_ANSWERS)},
    )
    torch.manual_seed(0)
    ViltForQuestionAnswering(config).save_pretrained(path)
    processor = ViltProcessor(ViltImageProcessorPil(size={"shortest_edge": 32}, size_divisor=8), tokenizer)
    processor.save_pretrained(path)


@zoo_model("tiny-trocr", version="1")
def build_tiny_trocr(path: Path) -> None:
    """TrOCR (ViT encoder + TrOCR decoder in a VisionEncoderDecoderModel), as microsoft/trocr-small-printed."""
    import torch
    from transformers import (
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    tokenizer = roberta_tokenizer(model_max_length=64)
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    encoder = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8,
    )
    decoder = TrOCRConfig(
        vocab_size=len(tokenizer), d_model=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=37,
        max_position_embeddings=64, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, decoder_start_token_id=eos,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = eos, pad, eos
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = eos, pad, eos, bos
    gen.max_length = 64
    model.save_pretrained(path)
    processor = TrOCRProcessor(image_processor=ViTImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(path)
    write_bpe_files(tokenizer, path)


def _whisper_tokenizer() -> Any:
    """Byte-level BPE ``WhisperTokenizer`` with Whisper's special and timestamp tokens in Whisper's order."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import WhisperTokenizer

    vocab, merges = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), None, 400, [], None)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, model_max_length=96)
    specials = [
        "<|endoftext|>", "<|startoftranscript|>", *(f"<|{lang}|>" for lang in WHISPER_LANGUAGES),
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
    ]
    tokenizer.add_tokens([AddedToken(s, special=True, normalized=False) for s in specials], special_tokens=True)
    # the 1501 timestamp tokens <|0.00|> .. <|30.00|> follow <|notimestamps|> and are not "special" (as in Whisper)
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(1501)])
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token"):
        setattr(tokenizer, attr, "<|endoftext|>")
    return tokenizer


@zoo_model("tiny-whisper", version="1")
def build_tiny_whisper(path: Path) -> None:
    """Whisper (30 s windows, timestamps, language tokens) with WhisperProcessor, as openai/whisper-*."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    tokenizer = _whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
        max_source_positions=1500, max_target_positions=96, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=ids("<|startoftranscript|>"), suppress_tokens=None, begin_suppress_tokens=None,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    gen = model.generation_config
    gen.decoder_start_token_id = ids("<|startoftranscript|>")
    gen.eos_token_id = gen.pad_token_id = gen.bos_token_id = eot
    gen.is_multilingual = True
    gen.lang_to_id = {f"<|{lang}|>": ids(f"<|{lang}|>") for lang in WHISPER_LANGUAGES}
    gen.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    gen.no_timestamps_token_id = ids("<|notimestamps|>")
    gen.prev_sot_token_id = ids("<|startofprev|>")
    gen.max_initial_timestamp_index = 50
    gen.max_length = config.max_target_positions
    gen.begin_suppress_tokens = [eot]
    gen.suppress_tokens = []
    gen._from_model_config = False  # keep these fields on reload
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=16), tokenizer=tokenizer).save_pretrained(path)
    write_bpe_files(tokenizer, path)


@zoo_model("tiny-clip", version="1")
def build_tiny_clip(path: Path) -> None:
    """CLIP (ViT + text transformer, 24-d projections) with CLIPProcessor, as openai/clip-vit-base-patch32."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    write_bpe_files(tokenizer, path)


@zoo_model("tiny-clap", version="1")
def build_tiny_clap(path: Path) -> None:
    """CLAP (HTSAT audio + RoBERTa text, 48 kHz, 2 s windows) with ClapProcessor, as laion/clap-htsat-unfused."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    tokenizer = roberta_tokenizer()
    features = ClapFeatureExtractor(
        feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=2, fft_window_size=1024,
        frequency_max=14000, truncation="rand_trunc", padding="repeatpad",
    )
    config = ClapConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 37, "max_position_embeddings": 80, "projection_dim": 24,
        },
        audio_config={
            "window_size": 4, "num_mel_bins": 16, "spec_size": 64, "patch_size": 4, "patch_stride": (4, 4),
            "depths": [1, 1], "num_attention_heads": [2, 2], "hidden_size": 32, "patch_embeds_hidden_size": 16,
            "projection_dim": 24, "num_hidden_layers": 2, "enable_fusion": False,
        },
        projection_dim=24,
    )
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(path)
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(path)
    write_bpe_files(tokenizer, path)


@zoo_model("tiny-detr", version="1")
def build_tiny_detr(path: Path) -> None:
    """DETR object detection (ResNet backbone, 10 queries, COCO-style labels) with its image processor."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    backbone = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"],
    )
    config = DetrConfig(
        backbone_config=backbone, use_timm_backbone=False, num_queries=10, encoder_layers=1, decoder_layers=1,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, d_model=32,
        id2label=dict(enumerate(DETECTION_LABELS)), label2id={label: i for i, label in enumerate(DETECTION_LABELS)},
    )
    torch.manual_seed(0)
    DetrForObjectDetection(config).save_pretrained(path)
    DetrImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(path)


@zoo_model("tiny-instruct-pix2pix", version="1")
def build_tiny_instruct_pix2pix(path: Path) -> None:
    """InstructPix2Pix (UNet2D with 8 input channels: noise + image latents), as timbrooks/instruct-pix2pix."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from ._diffusion import save_pipeline, sd_components

    save_pipeline(StableDiffusionInstructPix2PixPipeline(**sd_components(8)), path)


@zoo_model("tiny-resnet", version="1")
def build_tiny_resnet(path: Path) -> None:
    """A ResNet (stem + 3 stages, widths 8-32) with its image processor, as microsoft/resnet-50."""
    import torch
    from transformers import ResNetConfig, ResNetModel
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1], layer_type="basic")
    torch.manual_seed(0)
    ResNetModel(config).save_pretrained(path)
    ConvNextImageProcessorPil(
        size={"shortest_edge": 64}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
