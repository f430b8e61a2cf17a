"""Stable Diffusion 1.x / 2.x (and the toy world's model, which has its shape): one CLIP tokenizer and text
encoder whose last hidden state conditions a UNet through cross-attention; DDPM training on the noise (or the
velocity, for v-prediction models), the released code's DDIM sampler.

The attention loss reads the UNet's cross-attention layers at one feature-map side: which layers run at which
side follows from their processor names (down_blocks.<level>, mid_block, up_blocks.<level>).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from break_a_scene.attention import AttentionCapture
from break_a_scene.clip_tokenizer import build_clip_tokenizer
from break_a_scene.families.base import Conditioning, ModelFamily
from break_a_scene.models import component_class


@dataclass(frozen=True)
class UNetAttentionLayer:
    name: str  # the processor key, e.g. "down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor"
    block: str  # "down", "mid" or "up"
    resolution: int  # side of the square feature map the layer attends from
    is_cross: bool


def unet_attention_layers(unet: UNet2DConditionModel, latent_size: int) -> list[UNetAttentionLayer]:
    """Every attention processor of the UNet with the feature-map side it runs at for `latent_size`."""
    num_down = len(unet.config.block_out_channels)
    layers = []
    for name in unet.attn_processors:
        parts = name.split(".")  # "down_blocks.2.attentions.0...attn2.processor" or "mid_block.attentions..."
        block = parts[0].split("_")[0]
        if block == "down":
            level = int(parts[1])
        elif block == "up":
            level = num_down - 1 - int(parts[1])
        else:
            level = num_down - 1
        layers.append(UNetAttentionLayer(name, block, latent_size // 2**level, parts[-2] == "attn2"))
    return layers


def loss_layer_names(
    unet: UNet2DConditionModel, latent_size: int, resolution: int, blocks: tuple[str, ...] = ("down", "up")
) -> list[str]:
    """Cross-attention layers at `resolution` in the given blocks (SD2.1-base at 512 px: 16x16, 5 layers)."""
    layers = unet_attention_layers(unet, latent_size)
    names = [layer.name for layer in layers
             if layer.is_cross and layer.block in blocks and layer.resolution == resolution]
    if not names:
        available = sorted({layer.resolution for layer in layers if layer.is_cross})
        raise ValueError(
            f"the UNet has no cross-attention layer at {resolution}x{resolution} in blocks {blocks} for latent "
            f"side {latent_size}; cross-attention runs at {available}. Change method.attention_resolution_divisor."
        )
    return names


def released_capture_layers(unet: UNet2DConditionModel, latent_size: int) -> list[str]:
    """The layers whose maps the released code kept: every attention (self and cross) at <= latent/2."""
    return [layer.name for layer in unet_attention_layers(unet, latent_size) if layer.resolution <= latent_size // 2]


def sd_noise_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, steps_offset=1, prediction_type=prediction_type)


def released_sampler(scheduler_config) -> DDIMScheduler:
    """The released code's sampler: DDIM with the model's betas, no clipping, alpha_T not set to one."""
    return DDIMScheduler.from_config(scheduler_config, clip_sample=False, set_alpha_to_one=False)


def clip_text_config(tokenizer: CLIPTokenizer, sizes: dict) -> CLIPTextConfig:
    """A CLIP text encoder's config whose vocabulary and special tokens are the tokenizer's."""
    return CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **sizes)


@dataclass
class StableDiffusion(ModelFamily):
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler
    source: str = "built from config"

    pipeline_class: ClassVar[type[DiffusionPipeline]] = StableDiffusionPipeline
    denoiser_name: ClassVar[str] = "unet"
    subfolders: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")

    @classmethod
    def load_parts(cls, root: Path, kwargs: dict) -> dict:
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=torch.float32,
                                                          **kwargs),
            "vae": component_class(root, "vae").from_pretrained(root, subfolder="vae", dtype=torch.float32, **kwargs),
            "unet": UNet2DConditionModel.from_pretrained(root, subfolder="unet", dtype=torch.float32, **kwargs),
            "noise_scheduler": DDPMScheduler.from_pretrained(root, subfolder="scheduler"),
        }

    @classmethod
    def build(cls, text_encoder: dict, vae: dict | torch.nn.Module, unet: dict, prediction_type: str = "epsilon",
              seed: int = 0, source: str = "built from config", tokenizer: CLIPTokenizer | None = None,
              device: str = "cpu") -> "StableDiffusion":
        """Random-init parts from config dicts; deterministic for a seed.

        `vae` is an AutoencoderKL config, or an already built module (a `_target_` in the Hydra config, e.g. the
        toy world's PixelShuffleVAE). `tokenizer`: the real 49,408-token CLIP one by default, or any CLIP tokenizer
        (a `_target_` in the Hydra config, e.g. the toy world's pruned one). `device`: where the weights are made
        (random init of SD-sized parts takes about a minute on a CPU and seconds on a GPU).
        """
        torch.manual_seed(seed)
        tokenizer = tokenizer if tokenizer is not None else build_clip_tokenizer()
        with torch.device(device):
            return cls(tokenizer=tokenizer, text_encoder=CLIPTextModel(clip_text_config(tokenizer, text_encoder)),
                       vae=AutoencoderKL(**vae) if isinstance(vae, dict) else vae, unet=UNet2DConditionModel(**unet),
                       noise_scheduler=sd_noise_scheduler(prediction_type), source=source)

    # ---- the text side ----------------------------------------------------------------------------------
    def named_text_encoders(self) -> list[tuple[str, torch.nn.Module]]:
        return [("text_encoder", self.text_encoder)]

    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> Conditioning:
        return self.text_encoder(input_ids[:, 0])[0], {}

    def pipeline_parts(self) -> dict:
        return {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "unet": self.unet,
                "scheduler": self.inference_scheduler(), "safety_checker": None, "feature_extractor": None,
                "requires_safety_checker": False}

    # ---- training ---------------------------------------------------------------------------------------
    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet regresses at these timesteps: the velocity under v-prediction, else the noise."""
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return noise

    def training_inputs(self, latents: torch.Tensor, generator: torch.Generator | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DDPM: the noise, then t ~ U{0..T-1}, drawn in that order (from torch's global RNG without a
        generator)."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=generator, device=latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        return noisy, timesteps, self.training_target(latents, noise, timesteps)

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning,
                forward: Callable | None = None) -> torch.Tensor:
        hidden, extra = conditioning
        return (forward or self.unet.forward)(noisy, timesteps, hidden, **extra, return_dict=False)[0]

    @property
    def denoiser_downsample_factor(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ---- attention, adapters, sampling ----------------------------------------------------------------
    def attention_capture(self, latent_size: int, attention_side: int, released: bool = False) -> AttentionCapture:
        layers = loss_layer_names(self.unet, latent_size, attention_side)
        if not released:
            return AttentionCapture(self.unet, layers)
        return AttentionCapture(self.unet, layers, keep=released_capture_layers(self.unet, latent_size),
                                replace=list(self.unet.attn_processors))

    @classmethod
    def pipeline_attention_capture(cls, pipe: DiffusionPipeline, latent_size: int,
                                   attention_side: int) -> AttentionCapture:
        return AttentionCapture(pipe.unet, loss_layer_names(pipe.unet, latent_size, attention_side))

    def cross_attention_kv(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.unet.named_parameters() if ".attn2.to_k." in name or ".attn2.to_v." in name]

    @classmethod
    def inference_scheduler_for(cls, scheduler_config) -> DDIMScheduler:
        return released_sampler(scheduler_config)
