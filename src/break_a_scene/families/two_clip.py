"""The text side that SDXL and SD 3 share: CLIP-L (`text_encoder`) and CLIP-G (`text_encoder_2`), each with its
own tokenizer over one vocabulary, their penultimate hidden states side by side."""

from __future__ import annotations

import copy

import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from break_a_scene.clip_tokenizer import build_clip_tokenizer
from break_a_scene.families.stable_diffusion import clip_text_config


def build_clip_pair(text_encoder: dict, text_encoder_2: dict, first_class=CLIPTextModelWithProjection,
                    tokenizer: CLIPTokenizer | None = None) -> dict:
    """Random-init encoders from their sizes, with the real CLIP tokenizers (the first pads with <|endoftext|>,
    the second with '!', as the released models do), or `tokenizer` (a copy of it for the second)."""
    if tokenizer is None:
        tokenizer, tokenizer_2 = build_clip_tokenizer("<|endoftext|>"), build_clip_tokenizer("!")
    else:
        tokenizer_2 = copy.deepcopy(tokenizer)
    return {"tokenizer": tokenizer, "text_encoder": first_class(clip_text_config(tokenizer, text_encoder)),
            "tokenizer_2": tokenizer_2,
            "text_encoder_2": CLIPTextModelWithProjection(clip_text_config(tokenizer_2, text_encoder_2))}


class TwoCLIPEncoders:
    """Mixed into a family that holds `tokenizer`, `text_encoder`, `tokenizer_2` and `text_encoder_2`."""

    def named_text_encoders(self) -> list[tuple[str, torch.nn.Module]]:
        return [("text_encoder", self.text_encoder), ("text_encoder_2", self.text_encoder_2)]

    @classmethod
    def pipeline_tokenizers(cls, pipe) -> list[CLIPTokenizer]:
        return [pipe.tokenizer, pipe.tokenizer_2]

    def clip_states(self, input_ids: torch.Tensor):
        """(B, T, w1 + w2) penultimate hidden states side by side, and both encoders' outputs (for pooling)."""
        first = self.text_encoder(input_ids[:, 0], output_hidden_states=True)
        second = self.text_encoder_2(input_ids[:, 1], output_hidden_states=True)
        return torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1), first, second
