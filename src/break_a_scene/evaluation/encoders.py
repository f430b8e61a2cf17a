"""Image and text encoders for the metrics, loaded offline from local weights (or built tiny for tests).

Every encoder takes images as float tensors (B, 3, H, W) in [0, 1] and returns L2-normalised embeddings,
so a cosine similarity is a dot product. Each resizes and normalises as its model was trained to (its own
preprocessing), not with a resize of ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
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

        from break_a_scene.devices import resolve_device

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

        from break_a_scene.devices import resolve_device

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


# DreamSim variants whose loading runs no downloaded code (the ensemble and the DINO ones call torch.hub, which
# imports a repository's hubconf.py from the cache), each with the files its release zip unpacks
DREAMSIM_FILES = {
    "open_clip_vitb32": ["open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"],
    "clip_vitb32": ["clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"],
}


class DreamSimEncoder(torch.nn.Module):
    """DreamSim (Fu et al., 2023), the perceptual similarity MuDI and MagicTailor report: its similarity of two
    images is 1 - DreamSim distance, the cosine of their (normalised) DreamSim embeddings. Loaded by the `dreamsim`
    package from a folder holding its release files (the weights are loaded as tensors only, never downloaded);
    images go through its own preprocessing (bicubic resize to 224 x 224)."""

    def __init__(self, model: torch.nn.Module, size: int = 224):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.size = size

    @classmethod
    def load(cls, cache_dir: str, dreamsim_type: str = "open_clip_vitb32", device: str = "cpu") -> "DreamSimEncoder":
        from dreamsim import dreamsim

        from break_a_scene.devices import resolve_device

        folder = cls.check(cache_dir, dreamsim_type)
        model, _ = dreamsim(pretrained=True, device=resolve_device(device), cache_dir=str(folder),
                            dreamsim_type=dreamsim_type)
        return cls(model)

    @staticmethod
    def check(cache_dir: str, dreamsim_type: str = "open_clip_vitb32") -> Path:
        """The folder holding `dreamsim_type`'s release files; a one-line error naming what is missing."""
        if dreamsim_type not in DREAMSIM_FILES:
            raise UserInputError(
                f"evaluation.dreamsim.dreamsim_type={dreamsim_type!r}: use one of {', '.join(DREAMSIM_FILES)} (the "
                "ensemble and DINO variants load through torch.hub, which runs a downloaded repository's code).")
        folder = Path(cache_dir).expanduser()
        missing = [name for name in DREAMSIM_FILES[dreamsim_type] if not (folder / name).exists()]
        if missing:
            raise UserInputError(
                f"evaluation.dreamsim.cache_dir={cache_dir}: no {', '.join(missing)} there. On a machine with "
                f"internet: python -c \"from dreamsim import dreamsim; dreamsim(device='cpu', cache_dir='{folder}', "
                f"dreamsim_type='{dreamsim_type}')\", or unzip the release's {dreamsim_type} checkpoint there; "
                "evaluation.dreamsim=null leaves the DreamSim columns out.")
        return folder

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        resized = [image.resize((self.size, self.size), Image.BICUBIC) for image in to_pil(images)]
        pixels = torch.stack([torch.from_numpy(np.asarray(image)).permute(2, 0, 1) for image in resized])
        return F.normalize(self.model.embed(pixels.float().div(255).to(device)).float(), dim=-1)
