"""Class images for prior preservation (released code: 100 images of "a photo at the beach").

They are generated once with the base model and cached, so a sweep over scenes and ablations reuses them;
a user-supplied folder with enough images is used as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from break_a_scene.families.base import ModelFamily
from break_a_scene.inputs import open_image
from break_a_scene.sampling import sample_images
from break_a_scene.scene import image_to_tensor

log = logging.getLogger(__name__)
_SUFFIXES = (".png", ".jpg", ".jpeg")


def default_class_dir(cache_dir: str, model_source: str, prompt: str, resolution: int) -> Path:
    key = hashlib.sha1(f"{model_source}|{prompt}|{resolution}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "class_images" / key


def list_class_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES) if folder.is_dir() else []


def ensure_class_images(
    family: ModelFamily,
    folder: str | Path,
    count: int,
    prompt: str,
    resolution: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 4,
    seed: int = 0,
) -> list[Path]:
    """Top the folder up to `count` images with the base model; each file is written atomically."""
    folder = Path(folder)
    existing = list_class_images(folder)
    if len(existing) >= count:
        return existing[:count]
    folder.mkdir(parents=True, exist_ok=True)
    missing = count - len(existing)
    log.info("generating %d class images for %r into %s", missing, prompt, folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = family.pipeline().to(device)
    first = len(existing)
    seeds = [seed * 100_003 + first + i for i in range(missing)]
    for index, sample in enumerate(
        sample_images(pipe, [prompt] * missing, seeds, resolution, num_inference_steps, guidance_scale, batch_size,
                      family=type(family))
    ):
        target = folder / f"class_{first + index:05d}.png"
        staging = target.with_suffix(f".partial-{os.getpid()}.png")
        try:
            sample.image.save(staging)
            os.replace(staging, target)
        finally:  # a full disk leaves no half-written image behind
            staging.unlink(missing_ok=True)
    pipe.to("cpu")
    return list_class_images(folder)[:count]


def load_class_images(paths: list[Path], resolution: int) -> torch.Tensor:
    """(M, 3, R, R) in [-1, 1], center-cropped and resized like the instance image."""
    return torch.stack([image_to_tensor(open_image(path, "class image"), resolution) for path in paths])
