"""Turning an attention map into a picture: upsampled, colour-mapped and laid over the image."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image


def heatmap_overlay(image: Image.Image, attention: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`attention` (r, r) in [0, 1] drawn with the 'jet' colour map over `image`, at the image's size."""
    small = Image.fromarray((np.clip(attention, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    level = np.asarray(small.resize(image.size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    heat = colormaps["jet"](level)[..., :3] * 255.0
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray((base * (1 - alpha) + heat * alpha).astype(np.uint8))
