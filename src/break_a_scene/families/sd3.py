"""Stable Diffusion 3 / 3.5: an MM-DiT. Text and image tokens attend jointly in every block; the denoiser is
trained with rectified flow (x_t = (1 - s) x + s n, regressing the velocity n - x, s from a logit-normal draw
shifted as the model's scheduler shifts it); sampling is the model's own flow-matching Euler sampler.

Conditioning is `StableDiffusion3Pipeline`'s: the penultimate hidden states of CLIP-L and CLIP-G side by side,
zero-padded to the joint width and followed by the T5 sequence (here all zeros: T5 is not used yet, as the
pipeline does without it), and as pooled input both CLIP projections. Each placeholder token is added to both
CLIP encoders. The attention loss reads, in every joint block, the image queries against the text keys with a
softmax over the text keys only (`attention.JointAttentionCapture`), at the token's CLIP position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from break_a_scene.attention import JointAttentionCapture
from break_a_scene.families.base import Conditioning, ModelFamily
from break_a_scene.families.two_clip import TwoCLIPEncoders, build_clip_pair
from break_a_scene.models import component_class


def joint_attention_layers(transformer: torch.nn.Module) -> list[str]:
    """The processors of the attention modules that mix text into the image (those with text projections)."""
    return [name for name in transformer.attn_processors
            if getattr(transformer.get_submodule(name.removesuffix(".processor")), "add_k_proj", None) is not None]


@dataclass
class StableDiffusion3(TwoCLIPEncoders, ModelFamily):
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModelWithProjection
    tokenizer_2: CLIPTokenizer
    text_encoder_2: CLIPTextModelWithProjection
    vae: AutoencoderKL
    transformer: SD3Transformer2DModel
    noise_scheduler: FlowMatchEulerDiscreteScheduler
    source: str = "built from config"

    t5_length: ClassVar[int] = 256  # the pipeline's max_sequence_length: the T5 rows the text sequence ends with

    pipeline_class: ClassVar[type] = StableDiffusion3Pipeline
    denoiser_name: ClassVar[str] = "transformer"
    subfolders: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae",
                                             "transformer", "scheduler")
    optional_parts: ClassVar[tuple[str, ...]] = ("text_encoder_3", "tokenizer_3")

    @classmethod
    def load_parts(cls, root: Path, kwargs: dict) -> dict:
        def encoder(sub: str):
            return CLIPTextModelWithProjection.from_pretrained(root, subfolder=sub, dtype=torch.float32, **kwargs)

        return {
            "tokenizer": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            "text_encoder": encoder("text_encoder"),
            "tokenizer_2": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer_2"),
            "text_encoder_2": encoder("text_encoder_2"),
            "vae": component_class(root, "vae").from_pretrained(root, subfolder="vae", dtype=torch.float32, **kwargs),
            "transformer": SD3Transformer2DModel.from_pretrained(root, subfolder="transformer", dtype=torch.float32,
                                                                 **kwargs),
            "noise_scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler"),
        }

    @classmethod
    def build(cls, text_encoder: dict, text_encoder_2: dict, vae: dict | torch.nn.Module, transformer: dict,
              shift: float = 3.0, seed: int = 0, source: str = "built from config", device: str = "cpu",
              tokenizer: CLIPTokenizer | None = None) -> "StableDiffusion3":
        """Random-init SD3-shaped parts from config dicts, deterministic for a seed; the transformer's text and
        pooled widths follow from the encoders' sizes, so they cannot disagree. `vae`: an AutoencoderKL config or
        a built module; `tokenizer`: one CLIP tokenizer for both encoders (the real ones by default)."""
        torch.manual_seed(seed)
        widths = {"joint_attention_dim": text_encoder["hidden_size"] + text_encoder_2["hidden_size"],
                  "pooled_projection_dim": text_encoder["projection_dim"] + text_encoder_2["projection_dim"]}
        with torch.device(device):
            return cls(
                **build_clip_pair(text_encoder, text_encoder_2, tokenizer=tokenizer),
                vae=AutoencoderKL(**vae) if isinstance(vae, dict) else vae,
                transformer=SD3Transformer2DModel(**{**transformer, **widths}),
                noise_scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
                source=source,
            )

    # ---- the text side ----------------------------------------------------------------------------------
    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> Conditioning:
        clip, first, second = self.clip_states(input_ids)  # (B, 77, wl + wg)
        width = self.transformer.config.joint_attention_dim
        t5 = clip.new_zeros(clip.shape[0], self.t5_length, width)
        hidden = torch.cat([F.pad(clip, (0, width - clip.shape[-1])), t5], dim=-2)
        pooled = torch.cat([first.text_embeds, second.text_embeds], dim=-1)
        return hidden, {"pooled_projections": pooled}

    @classmethod
    def call_kwargs(cls) -> dict:
        return {"max_sequence_length": cls.t5_length}

    def pipeline_parts(self) -> dict:
        return {"transformer": self.transformer, "scheduler": self.inference_scheduler(), "vae": self.vae,
                "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "text_encoder_2": self.text_encoder_2,
                "tokenizer_2": self.tokenizer_2, "text_encoder_3": None, "tokenizer_3": None}

    # ---- training ---------------------------------------------------------------------------------------
    def training_inputs(self, latents: torch.Tensor, generator: torch.Generator | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The noise, then u ~ logit-normal(0, 1) for each sample, as the SD3 training recipe draws them; u picks
        the scheduler's (shifted) sigma and its timestep."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        u = torch.randn(latents.shape[0], generator=generator, device=latents.device).sigmoid()
        steps = self.noise_scheduler.config.num_train_timesteps
        index = (u * steps).long().clamp(max=steps - 1).cpu()
        sigmas = self.noise_scheduler.sigmas[index].to(latents)[:, None, None, None]
        timesteps = self.noise_scheduler.timesteps[index].to(latents.device)
        return (1 - sigmas) * latents + sigmas * noise, timesteps, noise - latents

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning,
                forward: Callable | None = None) -> torch.Tensor:
        hidden, extra = conditioning
        return (forward or self.transformer.forward)(hidden_states=noisy, timestep=timesteps,
                                                     encoder_hidden_states=hidden, **extra, return_dict=False)[0]

    @property
    def denoiser_downsample_factor(self) -> int:
        return self.transformer.config.patch_size

    # ---- attention, adapters, sampling ----------------------------------------------------------------
    def attention_capture(self, latent_size: int, attention_side: int, released: bool = False) -> JointAttentionCapture:
        if released:
            raise ValueError("method.attention_capture=released is the released code's UNet capture; an MM-DiT has "
                             "no such layers. Use method.attention_capture=loss_layers.")
        return self.pipeline_attention_capture(self, latent_size, attention_side)

    @classmethod
    def pipeline_attention_capture(cls, pipe, latent_size: int, attention_side: int) -> JointAttentionCapture:
        grid = latent_size // pipe.transformer.config.patch_size
        if attention_side > grid or grid % attention_side:
            raise ValueError(f"the transformer's token grid is {grid}x{grid} for latent side {latent_size}; the "
                             f"attention loss side {attention_side} must divide it. Change "
                             f"method.attention_resolution_divisor.")
        return JointAttentionCapture(pipe.transformer, joint_attention_layers(pipe.transformer), attention_side)

    def cross_attention_kv(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.transformer.named_parameters() if ".add_k_proj." in name
                or ".add_v_proj." in name]

    @classmethod
    def inference_scheduler_for(cls, scheduler_config) -> FlowMatchEulerDiscreteScheduler:
        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
