"""The toy world's benchmark prompts and how the judge's reading of an image scores against one.

A scene's prompt set: each non-empty token subset placed in new slots on a new background
("a photo of <asset1> on the left and <asset0> on the right on a navy background"). Per image: identity =
the share of the prompt's tokens whose object (colour and shape) the judge finds anywhere; prompt following
= the background as prompted and each found object in its prompted slot.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import numpy as np

from break_a_scene.toyworld.world import BACKGROUNDS, SLOTS, ToyObject, ToyScene


@dataclass(frozen=True)
class ToyPrompt:
    prompt: str
    tokens: tuple[str, ...]
    objects: tuple[ToyObject, ...]  # the tokens' objects, in the slots the prompt asks for
    background: str


def _where(slot: str) -> str:
    return "in the middle" if slot == "middle" else f"on the {slot}"


def benchmark_prompts(scene: ToyScene, tokens: list[str], per_subset: int = 2, seed: int = 0) -> list[ToyPrompt]:
    """Every non-empty subset of the tokens, `per_subset` times, in new slots on a new background."""
    rng = random.Random(seed)
    prompts = []
    for k in range(1, len(tokens) + 1):
        for subset in itertools.combinations(range(len(tokens)), k):
            for _ in range(per_subset):
                background = rng.choice([b for b in BACKGROUNDS if b != scene.background])
                slots = sorted(rng.sample(SLOTS, k), key=SLOTS.index)
                order = rng.sample(subset, k)
                objects = tuple(replace(scene.objects[i], slot=s) for i, s in zip(order, slots))
                phrase = " and ".join(f"{tokens[i]} {_where(s)}" for i, s in zip(order, slots))
                prompts.append(ToyPrompt(f"a photo of {phrase} on a {background} background",
                                         tuple(tokens[i] for i in order), objects, background))
    return prompts


def score_reading(prompt: ToyPrompt, reading) -> dict[str, float]:
    found = [reading.find(obj.colour, obj.shape) for obj in prompt.objects]
    placed = [obj.slot in slots for obj, slots in zip(prompt.objects, found)]
    background = float(reading.background == prompt.background)
    return {
        "identity": float(np.mean([bool(slots) for slots in found])),
        "position": float(np.mean(placed)),
        "background": background,
        "prompt_following": (float(np.mean(placed)) + background) / 2,
        "all_correct": float(all(placed) and background == 1.0),
    }
