"""Procedural scenes: up to three flat-coloured shapes in left/middle/right slots on a plain or gradient
background, with a caption and one soft mask per object. Deterministic from a seed.

Everything is drawn at 4x the target size and box-filtered down, so edges (and masks) are soft like a
photo's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
COLOURS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (50, 180, 60),
    "blue": (40, 90, 230), "purple": (140, 60, 200), "pink": (245, 120, 190), "white": (245, 245, 245),
}
BACKGROUNDS = {
    "black": (15, 15, 15), "gray": (120, 120, 120), "brown": (110, 70, 35), "navy": (20, 30, 90),
    "teal": (20, 110, 110), "beige": (215, 200, 160),
}
SLOTS = ("left", "middle", "right")
TEXTURES = ("plain", "striped", "dotted")
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ToyObject:
    shape: str
    colour: str
    slot: str
    texture: str = "plain"

    @property
    def name(self) -> str:
        """The class name ("blue ring"), as evaluation prompts use it."""
        texture = "" if self.texture == "plain" else f"{self.texture} "
        return f"{self.colour} {texture}{self.shape}"


@dataclass(frozen=True)
class ToyScene:
    objects: tuple[ToyObject, ...]
    background: str
    gradient: bool = False
    jitter: tuple[tuple[float, float, float], ...] = field(default=())  # per object: dx, dy, scale


def sample_scene(rng: random.Random, num_objects: int | None = None, textures: bool = False,
                 jitter: bool = True) -> ToyScene:
    """A random scene: 1-3 objects in distinct slots, distinct (shape, colour) pairs."""
    count = num_objects if num_objects is not None else rng.randint(1, 3)
    slots = sorted(rng.sample(SLOTS, count), key=SLOTS.index)
    objects, used = [], set()
    for slot in slots:
        while True:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if (shape, colour) not in used:
                break
        used.add((shape, colour))
        texture = rng.choice(TEXTURES) if textures else "plain"
        objects.append(ToyObject(shape, colour, slot, texture))
    moves = tuple((rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.85, 1.1)) if jitter else (0.0, 0.0, 1.0)
                  for _ in objects)
    return ToyScene(tuple(objects), rng.choice(list(BACKGROUNDS)), rng.random() < 0.5, moves)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: ToyScene, rng: random.Random | None = None, p_position: float = 0.7,
            p_background: float = 0.7) -> str:
    """"a photo of a blue ring on the left and an orange star on the right on a teal background".

    With `rng`, positions and the background are each left out sometimes (so that short prompts such as
    "a photo of <asset0>" are in the model's distribution); without, everything is said.
    """
    say_position = rng is None or rng.random() < p_position
    say_background = rng is None or rng.random() < p_background
    parts = []
    for obj in scene.objects:
        phrase = f"{_article(obj.name)} {obj.name}"
        if say_position:
            phrase += f" on the {obj.slot}" if obj.slot != "middle" else " in the middle"
        parts.append(phrase)
    text = "a photo of " + " and ".join(parts)
    if say_background:
        text += f" on {_article(scene.background)} {scene.background} background"
    return text


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(shape)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, fill=fill)
        inner = r * 0.5
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0 if fill == 255 else None)
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=fill)


def _texture(texture: str, colour: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) fill for an object: its colour, with stripes or dots darkened."""
    fill = np.broadcast_to(colour, (size, size, 3)).astype(np.float32).copy()
    ys, xs = np.mgrid[0:size, 0:size]
    period = 3 * _SUPERSAMPLE
    if texture == "striped":
        fill[((xs + ys) // (period // 2)) % 2 == 1] *= 0.45
    elif texture == "dotted":
        dots = ((xs % period) - period / 2) ** 2 + ((ys % period) - period / 2) ** 2 < (period / 4) ** 2
        fill[dots] *= 0.45
    return fill


def render(scene: ToyScene, size: int = 32) -> tuple[Image.Image, list[np.ndarray]]:
    """The RGB image and one float mask in [0, 1] per object, in object order."""
    big = size * _SUPERSAMPLE
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    canvas = np.broadcast_to(base, (big, big, 3)).copy()
    if scene.gradient:
        canvas *= np.linspace(1.0, 0.55, big, dtype=np.float32)[:, None, None]
    slot_width = big / len(SLOTS)
    radius = slot_width * 0.42
    masks = []
    jitter = scene.jitter or tuple((0.0, 0.0, 1.0) for _ in scene.objects)
    for obj, (dx, dy, scale) in zip(scene.objects, jitter):
        cx = slot_width * (SLOTS.index(obj.slot) + 0.5) + dx * slot_width * 0.06
        cy = big / 2 + dy * big * 0.12
        silhouette = Image.new("L", (big, big), 0)
        _draw_shape(ImageDraw.Draw(silhouette), obj.shape, cx, cy, radius * scale, 255)
        alpha = np.asarray(silhouette, dtype=np.float32)[..., None] / 255.0
        fill = _texture(obj.texture, np.array(COLOURS[obj.colour], dtype=np.float32), big)
        canvas = canvas * (1 - alpha) + fill * alpha
        masks.append(alpha[..., 0])
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).resize((size, size), Image.Resampling.BOX)
    small = [np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BOX),
                        dtype=np.float32) / 255.0 for m in masks]
    return image, small
