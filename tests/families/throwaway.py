"""A model family written for a test, from the seam alone: a tiny UNet trained with rectified flow (the noisy
latent is x_t = (1 - s) x + s n, the target the velocity n - x) instead of DDPM. If the method reached past
`ModelFamily`, training it would not run, or would train on the wrong target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from break_a_scene.attention import AttentionCapture
from break_a_scene.clip_tokenizer import build_clip_tokenizer
from break_a_scene.families.base import ModelFamily
from break_a_scene.families.stable_diffusion import clip_text_config, loss_layer_names, released_sampler


@dataclass
class Throwaway(ModelFamily):
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler
    source: str = "throwaway"

    pipeline_class: ClassVar[type] = StableDiffusionPipeline
    denoiser_name: ClassVar[str] = "unet"
    subfolders: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
    targets: ClassVar[list[torch.Tensor]] = []  # every target it handed to training, for the test to check

    @classmethod
    def build(cls, text_encoder: dict, vae: dict, unet: dict) -> "Throwaway":
        torch.manual_seed(0)
        tokenizer = build_clip_tokenizer()
        return cls(tokenizer, CLIPTextModel(clip_text_config(tokenizer, text_encoder)), AutoencoderKL(**vae),
                   UNet2DConditionModel(**unet), DDPMScheduler())

    def named_text_encoders(self):
        return [("text_encoder", self.text_encoder)]

    def encode_prompt(self, input_ids, resolution):
        return self.text_encoder(input_ids[:, 0])[0], {}

    def training_inputs(self, latents, generator):
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
        sigmas = torch.rand(latents.shape[0], generator=generator)
        noisy = (1 - sigmas[:, None, None, None]) * latents + sigmas[:, None, None, None] * noise
        self.targets.append(noise - latents)
        return noisy, sigmas * 1000, noise - latents

    def denoise(self, noisy, timesteps, conditioning, forward=None):
        hidden, extra = conditioning
        return (forward or self.unet.forward)(noisy, timesteps, hidden, **extra, return_dict=False)[0]

    @property
    def denoiser_downsample_factor(self):
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def attention_capture(self, latent_size, attention_side, released=False):
        return AttentionCapture(self.unet, loss_layer_names(self.unet, latent_size, attention_side))

    @classmethod
    def pipeline_attention_capture(cls, pipe, latent_size, attention_side):
        return AttentionCapture(pipe.unet, loss_layer_names(pipe.unet, latent_size, attention_side))

    def cross_attention_kv(self):
        return [p for name, p in self.unet.named_parameters() if ".attn2.to_k." in name or ".attn2.to_v." in name]

    def pipeline_parts(self):
        return {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "unet": self.unet,
                "scheduler": self.inference_scheduler(), "safety_checker": None, "feature_extractor": None,
                "requires_safety_checker": False}

    @classmethod
    def inference_scheduler_for(cls, scheduler_config):
        return released_sampler(scheduler_config)
