"""What the MM-DiT families (SD 3, FLUX.1) share: T5 as a text encoder, the attention loss on joint attention,
the text-to-image K/V set, and the flow-matching sampler called with the T5 length they were trained with."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from break_a_scene.attention import JointAttentionCapture
from break_a_scene.t5_tokenizer import build_t5_tokenizer

T5_SPARE_ROWS = 28  # T5's embedding matrix has 32,128 rows for its 32,100 tokens


def joint_attention_layers(transformer: torch.nn.Module) -> list[str]:
    """The processors of the attention modules that mix text into the image with their own text projections
    (SD 3's joint blocks, FLUX's double-stream blocks)."""
    return [name for name in transformer.attn_processors
            if getattr(transformer.get_submodule(name.removesuffix(".processor")), "add_k_proj", None) is not None]


def build_t5(sizes: dict) -> tuple[T5Tokenizer, T5EncoderModel]:
    """A random-init T5 encoder of the given sizes over the small offline T5 tokenizer (`t5_tokenizer`), with
    T5's spare rows past the tokenizer, without dropout (`load_t5`)."""
    tokenizer = build_t5_tokenizer()
    config = T5Config(vocab_size=len(tokenizer) + T5_SPARE_ROWS, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      is_encoder_decoder=False, use_cache=False, dropout_rate=0.0, **sizes)
    return tokenizer, T5EncoderModel(config)


def load_t5(root: Path, tokenizer_folder: str, encoder_folder: str, kwargs: dict) -> tuple[T5Tokenizer, T5EncoderModel]:
    """A pipeline's T5 with its dropout off (its config says 0.1): CLIP has none, and training in train mode
    would otherwise learn the token rows through a different encoder from the one that samples."""
    tokenizer = T5Tokenizer.from_pretrained(root, subfolder=tokenizer_folder)
    encoder = T5EncoderModel.from_pretrained(root, subfolder=encoder_folder, dtype=torch.float32, dropout_rate=0.0,
                                             **kwargs)
    return tokenizer, encoder


class JointAttentionFamily:
    """Mixed into a family holding a `transformer` with joint attention."""

    t5_length: ClassVar[int]  # the pipeline's max_sequence_length: the T5 positions of the text sequence

    @classmethod
    def patch_factor(cls, transformer: torch.nn.Module) -> int:
        """Latent pixels per side of one image token."""
        raise NotImplementedError

    @property
    def denoiser_downsample_factor(self) -> int:
        return self.patch_factor(self.transformer)

    @classmethod
    def call_kwargs(cls) -> dict:
        return {"max_sequence_length": cls.t5_length}

    def attention_capture(self, latent_size: int, attention_side: int, released: bool = False) -> JointAttentionCapture:
        if released:
            raise ValueError("method.attention_capture=released is the released code's UNet capture; an MM-DiT has "
                             "no such layers. Use method.attention_capture=loss_layers.")
        return self.pipeline_attention_capture(self, latent_size, attention_side)

    @classmethod
    def pipeline_attention_capture(cls, pipe, latent_size: int, attention_side: int) -> JointAttentionCapture:
        grid = latent_size // cls.patch_factor(pipe.transformer)
        if attention_side > grid or grid % attention_side:
            raise ValueError(f"the transformer's token grid is {grid}x{grid} for latent side {latent_size}; the "
                             f"attention loss side {attention_side} must divide it. Change "
                             f"method.attention_resolution_divisor.")
        return JointAttentionCapture(pipe.transformer, joint_attention_layers(pipe.transformer), attention_side)

    @property
    def lora_text_encoders(self) -> list[str]:
        """CLIP's: diffusers' SD 3 and FLUX LoRA loaders read no T5 adapters."""
        return [name for name, encoder in self.named_text_encoders() if not isinstance(encoder, T5EncoderModel)]

    def cross_attention_kv(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.transformer.named_parameters() if ".add_k_proj." in name
                or ".add_v_proj." in name]

    @classmethod
    def inference_scheduler_for(cls, scheduler_config) -> FlowMatchEulerDiscreteScheduler:
        return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)

    @classmethod
    def noised_to(cls, scheduler, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        """Rectified flow's forward process at the sampler's sigma of that step: (1 - s) x + s n."""
        sigma = scheduler.sigmas[step].to(latents)
        return (1 - sigma) * latents + sigma * noise
