"""Judges: a small CNN trained on generator ground truth that reads a toy image back into its attributes
(background colour, and for each slot: which shape, which colour, or empty). Generated images are scored
with it: identity = the token's object (colour and shape) is present; prompt following = the background
and position are as prompted."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, SLOTS, ToyScene, render, sample_scene

NONE = "none"
SHAPE_CLASSES = (NONE, *SHAPES)
COLOUR_CLASSES = (NONE, *COLOURS)
BACKGROUND_CLASSES = tuple(BACKGROUNDS)
JUDGE_SIZE = 32  # the side of the pictures the judge was trained on


class ToyJudge(nn.Module):
    """(B, 3, 32, 32) in [-1, 1] -> logits for background and, per slot, shape and colour."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(3, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
                                      block(2 * width, 4 * width), nn.AdaptiveAvgPool2d((1, 3)))
        hidden = 4 * width
        self.background = nn.Linear(hidden * 3, len(BACKGROUND_CLASSES))
        self.shape = nn.Linear(hidden * 3, len(SLOTS) * len(SHAPE_CLASSES))
        self.colour = nn.Linear(hidden * 3, len(SLOTS) * len(COLOUR_CLASSES))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(images).flatten(1)
        return {
            "background": self.background(features),
            "shape": self.shape(features).view(-1, len(SLOTS), len(SHAPE_CLASSES)),
            "colour": self.colour(features).view(-1, len(SLOTS), len(COLOUR_CLASSES)),
        }


def scene_targets(scene: ToyScene) -> dict[str, torch.Tensor]:
    shapes, colours = [0] * len(SLOTS), [0] * len(SLOTS)
    for obj in scene.objects:
        shapes[SLOTS.index(obj.slot)] = SHAPE_CLASSES.index(obj.shape)
        colours[SLOTS.index(obj.slot)] = COLOUR_CLASSES.index(obj.colour)
    return {"background": torch.tensor(BACKGROUND_CLASSES.index(scene.background)),
            "shape": torch.tensor(shapes), "colour": torch.tensor(colours)}


def _batch(rng: random.Random, size: int, count: int, noise: float) -> tuple[torch.Tensor, dict]:
    scenes = [sample_scene(rng) for _ in range(count)]
    images = torch.stack([image_to_tensor(render(s, size)[0], size) for s in scenes])
    if noise:  # generated images are never as clean as renders
        images = images + noise * torch.rand(count, 1, 1, 1) * torch.randn_like(images)
    targets = [scene_targets(s) for s in scenes]
    return images, {k: torch.stack([t[k] for t in targets]) for k in targets[0]}


def judge_loss(logits: dict, targets: dict) -> torch.Tensor:
    return (F.cross_entropy(logits["background"], targets["background"])
            + F.cross_entropy(logits["shape"].flatten(0, 1), targets["shape"].flatten())
            + F.cross_entropy(logits["colour"].flatten(0, 1), targets["colour"].flatten()))


def train_judge(steps: int = 2000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, size: int = 32,
                noise: float = 0.15) -> ToyJudge:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    judge = ToyJudge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for _ in tqdm(range(steps), desc="judge"):
        images, targets = _batch(rng, size, batch_size, noise)
        loss = judge_loss(judge(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return judge.eval()


@torch.no_grad()
def held_out_accuracy(judge: ToyJudge, count: int = 2000, seed: int = 12345, size: int = 32) -> dict[str, float]:
    """Accuracy on fresh renders (a seed never used in training): background, per-slot shape/colour, and
    whole-scene exact match."""
    images, targets = _batch(random.Random(seed), size, count, noise=0.0)
    out = judge(images)
    background = (out["background"].argmax(-1) == targets["background"])
    shape = (out["shape"].argmax(-1) == targets["shape"])
    colour = (out["colour"].argmax(-1) == targets["colour"])
    return {"background": background.float().mean().item(), "shape": shape.float().mean().item(),
            "colour": colour.float().mean().item(),
            "scene": (background & shape.all(-1) & colour.all(-1)).float().mean().item()}


@dataclass
class Reading:
    """What the judge sees in one image."""

    background: str
    slots: dict[str, tuple[str, str] | None]  # slot -> (colour, shape) or None

    def find(self, colour: str, shape: str) -> list[str]:
        """Slots holding an object of this colour and shape."""
        return [slot for slot, obj in self.slots.items() if obj == (colour, shape)]


@torch.no_grad()
def read_images(judge: ToyJudge, images: torch.Tensor) -> list[Reading]:
    """What the judge reads in (B, 3, H, W) images in [-1, 1]; another size than the judge's is first averaged
    down (or resized up) to it, as a model of another resolution draws the toy world."""
    if images.shape[-2:] != (JUDGE_SIZE, JUDGE_SIZE):
        images = F.interpolate(images, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", antialias=True)
    out = judge(images)
    readings = []
    for b in range(images.shape[0]):
        slots = {}
        for s, slot in enumerate(SLOTS):
            shape = SHAPE_CLASSES[out["shape"][b, s].argmax()]
            colour = COLOUR_CLASSES[out["colour"][b, s].argmax()]
            slots[slot] = None if NONE in (shape, colour) else (colour, shape)
        readings.append(Reading(BACKGROUND_CLASSES[out["background"][b].argmax()], slots))
    return readings


def save_judge(judge: ToyJudge, path: str | Path) -> None:
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in judge.state_dict().items()}, path)


def load_judge(path: str | Path) -> ToyJudge:
    judge = ToyJudge()
    state = torch.load(path, map_location="cpu", weights_only=True)
    judge.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return judge.eval()
