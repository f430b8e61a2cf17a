"""Break-A-Scene and its ablations in the toy world, scored by the judge.

Each (method, scene, seed) trains on one toy scene, then draws every prompt of the scene's prompt set:
each non-empty token subset placed in new slots on a new background ("a photo of <asset1> on the left and
<asset0> on the right on a navy background"). Per image: identity = the share of the prompt's tokens
whose object (colour and shape) the judge finds anywhere; prompt following = the background as prompted
and each found object in its prompted slot.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.judges import ToyJudge, read_images
from break_a_scene.toyworld.world import BACKGROUNDS, SLOTS, ToyObject, ToyScene

# the paper's ablations, as overrides of the toy world's Break-A-Scene experiment
METHODS: dict[str, list[str]] = {
    "break_a_scene": [],
    "no_phase1": ["method.phase1_steps=0"],
    "no_masked_loss": ["method.masked_loss=false"],
    "no_attention_loss": ["method.lambda_attention=0"],
    "no_union_sampling": ["data.loader.union_sampling=false"],
}


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


@torch.no_grad()
def score_samples(pipe, judge: ToyJudge, prompts: list[ToyPrompt], seeds: list[int], resolution: int,
                  steps: int = 25, guidance_scale: float = 3.0, batch_size: int = 32) -> list[dict]:
    """One row per (prompt, seed)."""
    from break_a_scene.sampling import sample_images

    jobs = [(p, s) for p in prompts for s in seeds]
    samples = list(sample_images(pipe, [p.prompt for p, _ in jobs], [s for _, s in jobs], resolution, steps,
                                 guidance_scale, batch_size, progress=False))
    images = torch.stack([image_to_tensor(sample.image, resolution) for sample in samples])
    rows = []
    for (prompt, seed), reading in zip(jobs, read_images(judge, images)):
        rows.append({"prompt": prompt.prompt, "sample_seed": seed, "concepts": len(prompt.tokens),
                     **score_reading(prompt, reading)})
    return rows


def mean_ci(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and bootstrap 95% interval over independent units (one value per scene x seed)."""
    array = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), (resamples, len(array)))].mean(axis=1)
    return float(array.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
