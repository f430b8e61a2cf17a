"""FLUX.1 (dev, schnell): an MM-DiT whose text sequence is T5's alone; CLIP-L gives only its pooled embedding,
which modulates every block with the timestep (and, for dev, the guidance scale the model was distilled on).

Latents are 16-channel and enter the transformer packed: each 2x2 patch is one token, positioned by rotary
embeddings of its (row, column) (`img_ids`; text tokens all sit at 0, `txt_ids`). Training is rectified flow
as for SD 3 (x_s = (1 - s) x + s n, target n - x, s from a logit-normal draw), shifted as the model's sampler
shifts at the training resolution (FLUX.1 shifts by the image's token count). The attention loss reads the
double-stream blocks, whose text keys have their own projections: image queries (rotated by their positions)
x the concept's T5 key, softmax over the text keys only. Each placeholder token goes into CLIP and T5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from break_a_scene.attention import token_positions
from break_a_scene.clip_tokenizer import build_clip_tokenizer
from break_a_scene.families.base import Conditioning, ModelFamily
from break_a_scene.families.mmdit import JointAttentionFamily, build_t5, load_t5
from break_a_scene.families.stable_diffusion import clip_text_config
from break_a_scene.models import component_class


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 patch one token, row-major, as FluxPipeline packs."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for a (height, width) latent."""
    b, _, channels = tokens.shape
    grid = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, channels // 4, height, width)


def image_ids(rows: int, columns: int, device=None) -> torch.Tensor:
    """(rows * columns, 3) rotary positions of the packed tokens: (0, row, column)."""
    grid = torch.zeros(rows, columns, 3, device=device)
    grid[..., 1] = torch.arange(rows, device=device)[:, None]
    grid[..., 2] = torch.arange(columns, device=device)[None, :]
    return grid.reshape(rows * columns, 3)


def resolution_shift(config, image_tokens: int) -> float:
    """FLUX.1's mu: the log-shift of its sigmas for an image of `image_tokens` packed tokens, linear between
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), as its pipeline computes it."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return config.base_shift + slope * (image_tokens - config.base_image_seq_len)


@dataclass
class Flux(JointAttentionFamily, ModelFamily):
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    tokenizer_2: T5Tokenizer
    text_encoder_2: T5EncoderModel
    vae: AutoencoderKL
    transformer: FluxTransformer2DModel
    noise_scheduler: FlowMatchEulerDiscreteScheduler
    source: str = "built from config"

    t5_length: ClassVar[int] = 512  # the pipeline's max_sequence_length
    # the guidance scale embedded while training FLUX.1-dev (a guidance-distilled model): 1, as diffusers' FLUX
    # DreamBooth examples train it; sampling embeds the scale it is asked for
    training_guidance: ClassVar[float] = 1.0

    default_guidance_scale: ClassVar[float] = 3.5  # FluxPipeline's default for FLUX.1-dev's guidance input
    pipeline_class: ClassVar[type] = FluxPipeline
    denoiser_name: ClassVar[str] = "transformer"
    subfolders: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae",
                                             "transformer", "scheduler")

    @classmethod
    def load_parts(cls, root: Path, kwargs: dict) -> dict:
        tokenizer_2, text_encoder_2 = load_t5(root, "tokenizer_2", "text_encoder_2", kwargs)
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=torch.float32,
                                                          **kwargs),
            "tokenizer_2": tokenizer_2,
            "text_encoder_2": text_encoder_2,
            "vae": component_class(root, "vae").from_pretrained(root, subfolder="vae", dtype=torch.float32, **kwargs),
            "transformer": FluxTransformer2DModel.from_pretrained(root, subfolder="transformer", dtype=torch.float32,
                                                                  **kwargs),
            "noise_scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler"),
        }

    @classmethod
    def build(cls, text_encoder: dict, text_encoder_2: dict, vae: dict, transformer: dict, scheduler: dict,
              seed: int = 0, source: str = "built from config", device: str = "cpu") -> "Flux":
        """Random-init FLUX-shaped parts from config dicts, deterministic for a seed: the real CLIP tokenizer and a
        small T5 (`mmdit.build_t5`). The transformer's text, pooled and input widths follow from the encoders and
        the VAE, so they cannot disagree."""
        torch.manual_seed(seed)
        widths = {"joint_attention_dim": text_encoder_2["d_model"],
                  "pooled_projection_dim": text_encoder["hidden_size"], "in_channels": 4 * vae["latent_channels"]}
        with torch.device(device):
            tokenizer = build_clip_tokenizer("<|endoftext|>")
            tokenizer_2, t5 = build_t5(text_encoder_2)
            return cls(tokenizer=tokenizer, text_encoder=CLIPTextModel(clip_text_config(tokenizer, text_encoder)),
                       tokenizer_2=tokenizer_2, text_encoder_2=t5, vae=AutoencoderKL(**vae),
                       transformer=FluxTransformer2DModel(**{**transformer, **widths}),
                       noise_scheduler=FlowMatchEulerDiscreteScheduler(**scheduler), source=source)

    # ---- the text side ----------------------------------------------------------------------------------
    def named_text_encoders(self) -> list[tuple[str, torch.nn.Module]]:
        return [("text_encoder", self.text_encoder), ("text_encoder_2", self.text_encoder_2)]

    @classmethod
    def pipeline_tokenizers(cls, pipe) -> list:
        return [pipe.tokenizer, pipe.tokenizer_2]

    @classmethod
    def token_lengths_of(cls, tokenizers: list) -> list[int]:
        return [tokenizers[0].model_max_length, cls.t5_length]

    @classmethod
    def key_positions(cls, input_ids: torch.Tensor, token_ids: list[torch.Tensor], lengths: list[int]) -> torch.Tensor:
        """The text keys are T5's: each token's position in the T5 ids."""
        return token_positions(input_ids[:, 1, : lengths[1]], token_ids[1]).unsqueeze(-1)

    def encode_prompt(self, input_ids: torch.Tensor, resolution: int) -> Conditioning:
        clip_length, t5_length = self.token_lengths
        pooled = self.text_encoder(input_ids[:, 0, :clip_length]).pooler_output
        hidden = self.text_encoder_2(input_ids[:, 1, :t5_length])[0]
        return hidden, {"pooled_projections": pooled}

    def pipeline_parts(self) -> dict:
        return {"transformer": self.transformer, "scheduler": self.inference_scheduler(), "vae": self.vae,
                "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "text_encoder_2": self.text_encoder_2,
                "tokenizer_2": self.tokenizer_2}

    @classmethod
    def conditional_rows(cls, batch: int, guidance_scale: float) -> slice:
        return slice(None)  # guidance is an input of the model, not a second, unconditional half of the batch

    # ---- training ---------------------------------------------------------------------------------------
    def training_inputs(self, latents: torch.Tensor, generator: torch.Generator | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The noise, then u ~ logit-normal(0, 1) per sample, shifted to the sigma the sampler would use at this
        resolution (timesteps are 1000 sigma, as the pipeline passes them)."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        u = torch.randn(latents.shape[0], generator=generator, device=latents.device).sigmoid()
        config = self.noise_scheduler.config
        if config.use_dynamic_shifting:
            tokens = (latents.shape[-2] // 2) * (latents.shape[-1] // 2)
            sigmas = self.noise_scheduler.time_shift(resolution_shift(config, tokens), 1.0, u)
        else:
            sigmas = config.shift * u / (1 + (config.shift - 1) * u)
        s = sigmas.to(latents.dtype)[:, None, None, None]
        return (1 - s) * latents + s * noise, sigmas * 1000, noise - latents

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning,
                forward: Callable | None = None) -> torch.Tensor:
        hidden, extra = conditioning
        batch, _, height, width = noisy.shape
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), self.training_guidance, device=noisy.device, dtype=noisy.dtype)
        out = (forward or self.transformer.forward)(
            hidden_states=pack(noisy), timestep=timesteps.to(noisy.dtype) / 1000, guidance=guidance,
            encoder_hidden_states=hidden, txt_ids=torch.zeros(hidden.shape[1], 3, device=noisy.device),
            img_ids=image_ids(height // 2, width // 2, noisy.device), **extra, return_dict=False)[0]
        return unpack(out, height, width)

    @classmethod
    def patch_factor(cls, transformer: torch.nn.Module) -> int:
        return 2  # the 2x2 packing (the transformer's own patch size is 1)

    @classmethod
    def pipeline_layout(cls, latents: torch.Tensor) -> torch.Tensor:
        return pack(latents)  # FluxPipeline holds packed tokens between steps


