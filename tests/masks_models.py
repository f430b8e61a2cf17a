"""Tiny random OWLv2 and SAM, built from configs and saved with their processors, so that masks from words
are tested through transformers' real loaders (`from_pretrained`, offline) and real processors."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
    SamConfig,
    SamImageProcessor,
    SamModel,
    SamProcessor,
)

from break_a_scene.clip_tokenizer import build_clip_tokenizer

SIZE = 96  # both models' input side: OWLv2 gives (96 / 16)^2 = 36 boxes


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    layers = dict(intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = Owlv2Config(text_config=dict(hidden_size=32, max_position_embeddings=16, **layers),
                         vision_config=dict(hidden_size=32, image_size=SIZE, patch_size=16, **layers),
                         projection_dim=32)
    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": SIZE, "width": SIZE}),
                   tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_sam(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=SIZE, patch_size=16, output_channels=16, global_attn_indexes=[0],
                           window_size=2, mlp_dim=64, num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=SIZE, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32,
                                 iou_head_hidden_dim=16))
    SamModel(config).save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": SIZE},
                                                   pad_size={"height": SIZE, "width": SIZE})).save_pretrained(folder)
    return folder
