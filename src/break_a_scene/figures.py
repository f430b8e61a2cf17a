"""Pictures for people: attention heat maps over images, masks, labelled grids."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFilter, ImageOps

MASK_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                (240, 50, 230), (210, 245, 60)]


def tensor_to_image(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def _upsample(grid: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BICUBIC) -> np.ndarray:
    small = Image.fromarray((np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    return np.asarray(small.resize(size, resample), dtype=np.float32) / 255.0


def colorize(grid: np.ndarray, size: int) -> Image.Image:
    """An (r, r) map in [0, 1] as a 'jet' picture of side `size`, sharp pixels (nearest)."""
    level = _upsample(grid, (size, size), Image.Resampling.NEAREST)
    return Image.fromarray((colormaps["jet"](level)[..., :3] * 255).astype(np.uint8))


def grey(grid: np.ndarray, size: int) -> Image.Image:
    level = _upsample(grid, (size, size), Image.Resampling.NEAREST)
    return Image.fromarray((level * 255).astype(np.uint8)).convert("RGB")


def heatmap_overlay(image: Image.Image, attention: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`attention` (r, r) in [0, 1] drawn with the 'jet' colour map over `image`, at the image's size."""
    level = _upsample(attention, image.size)
    heat = colormaps["jet"](level)[..., :3] * 255.0
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray((base * (1 - alpha) + heat * alpha).astype(np.uint8))


def masks_overlay(image: Image.Image, masks: np.ndarray, labels: list[str] | None = None, size: int = 256,
                  width: int = 2) -> Image.Image:
    """Each mask (N, H, W, in [0, 1], at the image's size) drawn as an outline in its own colour, edged in
    black so it shows on any object, with its label in a box at the top left of the mask; the picture is
    enlarged to at least `size` px so that outlines and labels can be read."""
    scale = max(1, -(-size // max(image.size)))
    picture = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    base = np.asarray(picture).copy()
    draw_labels = []
    for index, mask in enumerate(masks):
        inside = Image.fromarray(((mask > 0.5) * 255).astype(np.uint8)).resize(picture.size, Image.Resampling.NEAREST)
        ring = _outline(inside, width)
        edge = _outline(inside.filter(ImageFilter.MaxFilter(2 * width + 1)), 1)
        base[edge] = (0, 0, 0)
        base[ring] = MASK_COLOURS[index % len(MASK_COLOURS)]
        rows, cols = np.nonzero(np.asarray(inside))
        if labels is not None and len(rows):
            colour = MASK_COLOURS[index % len(MASK_COLOURS)]
            draw_labels.append((labels[index], int(cols.min()), int(rows.min()), colour))
    picture = Image.fromarray(base)
    draw = ImageDraw.Draw(picture)
    for text, x, y, colour in draw_labels:
        box = draw.textbbox((x + 2, y + 2), text)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((x + 2, y + 2), text, fill=colour)
    return picture


def _outline(inside: Image.Image, width: int) -> np.ndarray:
    """The band of `width` px just inside a binary mask's boundary (the picture's border counts as one)."""
    padded = ImageOps.expand(inside, border=width, fill=0).filter(ImageFilter.MinFilter(2 * width + 1))
    eroded = padded.crop((width, width, width + inside.width, width + inside.height))
    return (np.asarray(inside) > 127) & (np.asarray(eroded) <= 127)


def labelled_grid(rows: list[list[Image.Image]], row_labels: list[str], col_labels: list[str] | None = None,
                  cell: int = 128, label_height: int = 14) -> Image.Image:
    """Cells resized to `cell` px, a text line above each row (and column titles on top)."""
    width = cell * max((len(r) for r in rows), default=1)
    top = label_height if col_labels else 0
    sheet = Image.new("RGB", (width, top + len(rows) * (cell + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(col_labels or []):
        draw.text((c * cell + 2, 1), text, fill="black")
    for r, (cells, text) in enumerate(zip(rows, row_labels)):
        y = top + r * (cell + label_height)
        draw.text((2, y + 1), text, fill="black")
        for c, picture in enumerate(cells):
            sheet.paste(picture.convert("RGB").resize((cell, cell)), (c * cell, y + label_height))
    return sheet
