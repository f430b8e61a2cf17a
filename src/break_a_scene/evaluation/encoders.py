"""Image and text encoders for the metrics, loaded offline from local weights (or built tiny for tests).

Every encoder takes images as float tensors (B, 3, H, W) in [0, 1] and returns L2-normalised embeddings,
so a cosine similarity is a dot product.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from break_a_scene.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _prepare(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """Resize the whole image (no crop: masked concepts may touch the border) and normalise."""
    images = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class ClipEncoder(torch.nn.Module):
    """An open_clip model: `embed_images` and `embed_texts` (for prompt similarity, CLIP-I, concept accuracy)."""

    def __init__(self, model: torch.nn.Module, tokenizer, image_size: int, mean, std):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)

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
        cfg = model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        return cls(model, open_clip.get_tokenizer(model_name), size, cfg["mean"], cfg["std"])

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = _prepare(images.to(device), self.image_size, self.mean, self.std)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return F.normalize(self.model.encode_text(self.tokenizer(texts).to(device)).float(), dim=-1)


class DinoEncoder(torch.nn.Module):
    """A transformers ViT (DINO ViT-B/16 by default); the embedding is the final CLS token."""

    def __init__(self, model: torch.nn.Module, image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def load(cls, name_or_path: str = "facebook/dino-vitb16", device: str = "cpu") -> "DinoEncoder":
        from transformers import ViTModel

        from break_a_scene.generate import resolve_device

        device = resolve_device(device)
        try:
            model = ViTModel.from_pretrained(name_or_path, local_files_only=True, add_pooling_layer=False)
        except OSError as err:
            where = "folder" if Path(name_or_path).exists() else "Hugging Face cache"
            raise UserInputError(
                f"cannot load the DINO model '{name_or_path}' from the {where}: {err}. Download it with "
                f"`hf download {name_or_path}` or point evaluation.dino.name_or_path to a local folder."
            ) from None
        return cls(model.to(device), image_size=model.config.image_size)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = _prepare(images.to(device), self.image_size, self.mean, self.std)
        return F.normalize(self.model(pixel_values=pixels).last_hidden_state[:, 0].float(), dim=-1)
