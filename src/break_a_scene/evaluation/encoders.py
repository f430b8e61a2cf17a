"""Image and text encoders for the metrics, loaded offline from local weights (or built tiny for tests).

Every encoder takes images as float tensors (B, 3, H, W) in [0, 1] and returns L2-normalised embeddings,
so a cosine similarity is a dot product. Each resizes and normalises as its model was trained to (its own
preprocessing), not with a resize of ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from break_a_scene.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> 8-bit RGB images, what each encoder's own preprocessing was made for."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in pixels]


class ClipEncoder(torch.nn.Module):
    """An open_clip model: `embed_images` and `embed_texts` (for prompt similarity, CLIP-I, concept accuracy).

    Images go through the model's own preprocessing (open_clip's transform: PIL resize with antialiasing,
    centre crop, normalisation), so scores are comparable with other implementations'.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, preprocess: Callable[[Image.Image], torch.Tensor]):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess = preprocess

    @classmethod
    def load(cls, model_name: str = "ViT-L-14", pretrained: str | None = "openai", device: str = "cpu",
             cache_dir: str | None = None) -> "ClipEncoder":
        """`model_name` is an open_clip name with `pretrained` a tag or a local checkpoint file, or
        `local-dir:/path` (open_clip_config.json + weights) or `hf-hub:org/repo` from the local HF cache."""
        import open_clip

        from break_a_scene.generate import resolve_device

        device = resolve_device(device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, cache_dir=cache_dir, require_pretrained=True)
        except Exception as err:  # open_clip raises RuntimeError/FileNotFoundError/HF errors when offline
            raise UserInputError(
                f"cannot load the CLIP model '{model_name}' (pretrained={pretrained!r}) offline: "
                f"{type(err).__name__}: {err}. On a machine with internet run `python -c \"import open_clip; "
                f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` to fill the Hugging Face "
                "cache, or point evaluation.clip.pretrained to a local checkpoint file "
                "(or evaluation.clip.model_name to local-dir:/path)."
            ) from None
        return cls(model, open_clip.get_tokenizer(model_name), preprocess)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = torch.stack([self.preprocess(image) for image in to_pil(images)]).to(device)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return F.normalize(self.model.encode_text(self.tokenizer(texts).to(device)).float(), dim=-1)


class DinoEncoder(torch.nn.Module):
    """A transformers ViT (DINO ViT-B/16 by default); the embedding is the final CLS token. Images go through
    the model's own image processor (its preprocessor_config.json)."""

    def __init__(self, model: torch.nn.Module, processor):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.processor = processor

    @classmethod
    def load(cls, name_or_path: str = "facebook/dino-vitb16", device: str = "cpu") -> "DinoEncoder":
        from transformers import AutoImageProcessor, ViTModel

        from break_a_scene.generate import resolve_device

        device = resolve_device(device)
        try:
            model = ViTModel.from_pretrained(name_or_path, local_files_only=True, add_pooling_layer=False)
            processor = AutoImageProcessor.from_pretrained(name_or_path, local_files_only=True)
        except OSError as err:
            where = "folder" if Path(name_or_path).exists() else "Hugging Face cache"
            raise UserInputError(
                f"cannot load the DINO model '{name_or_path}' (weights and preprocessor_config.json) from the "
                f"{where}: {err}. Download it with `hf download {name_or_path}` or point evaluation.dino.name_or_path "
                f"to a local folder."
            ) from None
        return cls(model.to(device), processor)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = self.processor(images=to_pil(images), return_tensors="pt").pixel_values.to(device)
        return F.normalize(self.model(pixel_values=pixels).last_hidden_state[:, 0].float(), dim=-1)
