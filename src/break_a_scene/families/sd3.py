"""Stable Diffusion 3 / 3.5: an MM-DiT. Text and image tokens attend jointly in every block; the denoiser is
trained with rectified flow (x_t = (1 - s) x + s n, regressing the velocity n - x, s from a logit-normal draw
shifted as the model's scheduler shifts it); sampling is the model's own flow-matching Euler sampler.

Conditioning is `StableDiffusion3Pipeline`'s: the penultimate hidden states of CLIP-L and CLIP-G side by side,
zero-padded to the joint width and followed by the T5 sequence (all zeros when the model is loaded without T5,
as the pipeline does without it), and as pooled input both CLIP projections. Each placeholder token is added to
every text encoder. The attention loss reads, in every joint block, the image queries against the text keys
with a softmax over the text keys only (`attention.JointAttentionCapture`), summed over the token's keys: its
CLIP position and, with T5, its T5 position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from break_a_scene.attention import token_positions
from break_a_scene.families.base import Conditioning, ModelFamily
from break_a_scene.families.mmdit import JointAttentionFamily, build_t5, load_t5
from break_a_scene.families.two_clip import TwoCLIPEncoders, build_clip_pair
from break_a_scene.models import component_class


@dataclass
class StableDiffusion3(JointAttentionFamily, TwoCLIPEncoders, ModelFamily):
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModelWithProjection
    tokenizer_2: CLIPTokenizer
    text_encoder_2: CLIPTextModelWithProjection
    vae: AutoencoderKL
    transformer: SD3Transformer2DModel
    noise_scheduler: FlowMatchEulerDiscreteScheduler
    source: str = "built from config"
    tokenizer_3: T5Tokenizer | None = None
    text_encoder_3: T5EncoderModel | None = None

    t5_length: ClassVar[int] = 256
    default_guidance_scale: ClassVar[float] = 7.0  # StableDiffusion3Pipeline's default
    pipeline_class: ClassVar[type] = StableDiffusion3Pipeline
    denoiser_name: ClassVar[str] = "transformer"
    subfolders: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae",
                                             "transformer", "scheduler")
    optional_parts: ClassVar[tuple[str, ...]] = ("text_encoder_3", "tokenizer_3")

    @classmethod
    def load_parts(cls, root: Path, kwargs: dict, *, text_encoder_3: bool = True) -> dict:
        """`text_encoder_3=False` leaves T5 (SD 3.5's is 4.7B parameters) unloaded, as the pipeline allows;
        a folder without it loads without it either way."""
        def encoder(sub: str):
            return CLIPTextModelWithProjection.from_pretrained(root, subfolder=sub, dtype=torch.float32, **kwargs)

        parts = {
            "tokenizer": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            "text_encoder": encoder("text_encoder"),
            "tokenizer_2": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer_2"),
            "text_encoder_2": encoder("text_encoder_2"),
            "vae": component_class(root, "vae").from_pretrained(root, subfolder="vae", dtype=torch.float32, **kwargs),
            "transformer": SD3Transformer2DModel.from_pretrained(root, subfolder="transformer", dtype=torch.float32,
                                                                 **kwargs),
            "noise_scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler"),
        }
        if text_encoder_3 and (root / "text_encoder_3").is_dir():
            parts["tokenizer_3"], parts["text_encoder_3"] = load_t5(root, "tokenizer_3", "text_encoder_3", kwargs)
        return parts

    @classmethod
    def build(cls, text_encoder: dict, text_encoder_2: dict, vae: dict | torch.nn.Module, transformer: dict,
              shift: float = 3.0, seed: int = 0, source: str = "built from config", device: str = "cpu",
              tokenizer: CLIPTokenizer | None = None, text_encoder_3: dict | None = None) -> "StableDiffusion3":
        """Random-init SD3-shaped parts from config dicts, deterministic for a seed; the transformer's text and
        pooled widths follow from the encoders' sizes, so they cannot disagree. `vae`: an AutoencoderKL config or
        a built module; `tokenizer`: one CLIP tokenizer for both encoders (the real ones by default);
        `text_encoder_3`: a small T5's sizes (`mmdit.build_t5`), or none."""
        torch.manual_seed(seed)
        clip_width = text_encoder["hidden_size"] + text_encoder_2["hidden_size"]
        if text_encoder_3 and text_encoder_3["d_model"] < clip_width:
            raise ValueError(f"text_encoder_3.d_model={text_encoder_3['d_model']} is narrower than the CLIP states "
                             f"side by side ({clip_width}); SD 3 pads those to T5's width.")
        widths = {"joint_attention_dim": text_encoder_3["d_model"] if text_encoder_3 else clip_width,
                  "pooled_projection_dim": text_encoder["projection_dim"] + text_encoder_2["projection_dim"]}
        with torch.device(device):
            t5 = dict(zip(("tokenizer_3", "text_encoder_3"), build_t5(text_encoder_3))) if text_encoder_3 else {}
            return cls(
                **build_clip_pair(text_encoder, text_encoder_2, tokenizer=tokenizer),
                vae=AutoencoderKL(**vae) if isinstance(vae, dict) else vae,
                transformer=SD3Transformer2DModel(**{**transformer, **widths}),
                noise_scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
                source=source,
                **t5,
            )

    # ---- the text side ----------------------------------------------------------------------------------
    def named_text_encoders(self) -> list[tuple[str, torch.nn.Module]]:
        t5 = [("text_encoder_3", self.text_encoder_3)] if self.text_encoder_3 is not None else []
        return [*super().named_text_encoders(), *t5]

    @classmethod
    def pipeline_tokenizers(cls, pipe) -> list:
        t5 = getattr(pipe, "tokenizer_3", None)
        return [*super().pipeline_tokenizers(pipe), *([t5] if t5 is not None else [])]

    @classmethod
    def token_lengths_of(cls, tokenizers: list) -> list[int]:
        clip = [tokenizer.model_max_length for tokenizer in tokenizers[:2]]
        return clip + [cls.t5_length] * (len(tokenizers) - 2)

    @classmethod
    def key_positions(cls, input_ids: torch.Tensor, token_ids: list[torch.Tensor], lengths: list[int]) -> torch.Tensor:
        """The text sequence is CLIP's positions, then T5's: a token's key in each."""
        clip = token_positions(input_ids[:, 0, : lengths[0]], token_ids[0])
        if len(token_ids) < 3:
            return clip.unsqueeze(-1)
        t5 = token_positions(input_ids[:, 2, : lengths[2]], token_ids[2])
        return torch.stack([clip, torch.where(t5 >= 0, t5 + lengths[0], t5)], dim=-1)

    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> Conditioning:
        lengths = self.token_lengths
        clip, first, second = self.clip_states(input_ids[..., : lengths[0]])  # (B, 77, wl + wg)
        width = self.transformer.config.joint_attention_dim
        if self.text_encoder_3 is not None:
            t5 = self.text_encoder_3(input_ids[:, 2, : lengths[2]])[0]
        else:
            t5 = clip.new_zeros(clip.shape[0], self.t5_length, width)
        hidden = torch.cat([F.pad(clip, (0, width - clip.shape[-1])), t5], dim=-2)
        pooled = torch.cat([first.text_embeds, second.text_embeds], dim=-1)
        return hidden, {"pooled_projections": pooled}

    def pipeline_parts(self) -> dict:
        return {"transformer": self.transformer, "scheduler": self.inference_scheduler(), "vae": self.vae,
                "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "text_encoder_2": self.text_encoder_2,
                "tokenizer_2": self.tokenizer_2, "text_encoder_3": self.text_encoder_3, "tokenizer_3": self.tokenizer_3}

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

    @classmethod
    def patch_factor(cls, transformer: torch.nn.Module) -> int:
        return transformer.config.patch_size
