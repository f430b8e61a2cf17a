"""Stable Diffusion XL: two tokenizers and text encoders, each placeholder token in both.

The UNet is conditioned as `StableDiffusionXLPipeline` conditions it, so that training and sampling agree:
the penultimate hidden states of both encoders side by side (768 + 1280 = 2048 wide for the real model),
and as extra inputs the second encoder's pooled, projected embedding and the six "time ids" (original size,
crop corner, target size). Training pictures are the whole scene resized to the training resolution, so
the time ids are (R, R, 0, 0, R, R), what the pipeline uses for an R x R image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from break_a_scene.families.base import Conditioning
from break_a_scene.families.stable_diffusion import StableDiffusion, sd_noise_scheduler
from break_a_scene.families.two_clip import TwoCLIPEncoders, build_clip_pair


@dataclass
class StableDiffusionXL(TwoCLIPEncoders, StableDiffusion):
    tokenizer_2: CLIPTokenizer | None = None
    text_encoder_2: CLIPTextModelWithProjection | None = None

    pipeline_class: ClassVar[type] = StableDiffusionXLPipeline
    subfolders: ClassVar[tuple[str, ...]] = (*StableDiffusion.subfolders, "tokenizer_2", "text_encoder_2")

    def __post_init__(self) -> None:
        if self.tokenizer_2 is None or self.text_encoder_2 is None:
            raise ValueError("SDXL needs tokenizer_2 and text_encoder_2")

    @classmethod
    def load_parts(cls, root: Path, kwargs: dict) -> dict:
        return {
            **super().load_parts(root, kwargs),
            "tokenizer_2": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer_2"),
            "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                root, subfolder="text_encoder_2", dtype=torch.float32, **kwargs
            ),
        }

    @classmethod
    def build(cls, text_encoder: dict, text_encoder_2: dict, vae: dict, unet: dict, prediction_type: str = "epsilon",
              seed: int = 0, source: str = "built from config", device: str = "cpu") -> "StableDiffusionXL":
        """Random-init SDXL-shaped parts from config dicts, deterministic for a seed, with the real CLIP
        tokenizers (SDXL's first pads with <|endoftext|>, its second with '!')."""
        torch.manual_seed(seed)
        with torch.device(device):
            return cls(
                **build_clip_pair(text_encoder, text_encoder_2, first_class=CLIPTextModel),
                vae=AutoencoderKL(**vae),
                unet=UNet2DConditionModel(**unet_config(unet, text_encoder, text_encoder_2)),
                noise_scheduler=sd_noise_scheduler(prediction_type),
                source=source,
            )

    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> Conditioning:
        hidden, _, second = self.clip_states(input_ids)
        time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], device=hidden.device)
        extra = {"text_embeds": second.text_embeds,
                 "time_ids": time_ids.to(hidden.dtype).expand(hidden.shape[0], -1)}
        return hidden, {"added_cond_kwargs": extra}

    def pipeline_parts(self) -> dict:
        return {"vae": self.vae, "text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2,
                "tokenizer": self.tokenizer, "tokenizer_2": self.tokenizer_2, "unet": self.unet,
                "scheduler": self.inference_scheduler(), "add_watermarker": False}


def unet_config(unet: dict, text_encoder: dict, text_encoder_2: dict) -> dict:
    """The UNet's config with what follows from the text encoders' sizes filled in (cross-attention width:
    both hidden sizes; added embedding: six time ids plus the pooled projection), so they cannot disagree."""
    return {**unet, "cross_attention_dim": text_encoder["hidden_size"] + text_encoder_2["hidden_size"],
            "addition_embed_type": "text_time",
            "projection_class_embeddings_input_dim": 6 * unet["addition_time_embed_dim"]
            + text_encoder_2["projection_dim"]}
