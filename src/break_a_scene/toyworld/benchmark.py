"""The toy world's benchmark prompts and how the judge's reading of an image scores against one.

A scene's prompt set: each non-empty token subset placed in new slots on a new background
("a photo of <asset1> on the left and <asset0> on the right on a navy background"). Per image: identity =
the share of the prompt's tokens whose object (colour and shape) the judge finds anywhere; prompt following
= the background as prompted and each found object in its prompted slot. Two readings of entanglement:
extra_objects = the judge sees more objects than the prompt asks for (a concept leaking in, or one drawn
twice); mixed = it sees an object whose colour belongs to one of the scene's objects and shape to another.
What the strays are (each object the prompt does not ask for where it stands, counted per image): a prompted
concept again in the slot it was trained in (stray_training_slot), a prompted concept elsewhere
(stray_elsewhere), a scene concept the prompt leaves out (stray_unprompted), any other object (stray_other).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace

import numpy as np

from break_a_scene.toyworld.world import BACKGROUNDS, SLOTS, ToyObject, ToyScene


@dataclass(frozen=True)
class ToyPrompt:
    prompt: str
    tokens: tuple[str, ...]
    objects: tuple[ToyObject, ...]  # the tokens' objects, in the slots the prompt asks for
    background: str
    scene_objects: tuple[ToyObject, ...]  # every object of the scene the tokens were learned from


def slot_phrase(slot: str) -> str:
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
                phrase = " and ".join(f"{tokens[i]} {slot_phrase(s)}" for i, s in zip(order, slots))
                prompts.append(ToyPrompt(f"a photo of {phrase} on a {background} background",
                                         tuple(tokens[i] for i in order), objects, background, scene.objects))
    return prompts


def library_prompts(scenes: list[ToyScene], tokens: list[list[str]], per_subset: int = 2,
                    seed: int = 0) -> list[ToyPrompt]:
    """A concept library's prompts: each concept alone, then each pair of concepts from two different pictures
    (objects that differ), `per_subset` times, in new slots on a background none of the pictures has.
    `tokens[p][i]` names object i of picture p; a concept two pictures share may have one token in both."""
    rng = random.Random(seed)
    backgrounds = [b for b in BACKGROUNDS if b not in {scene.background for scene in scenes}]
    learned = tuple(dict.fromkeys(obj for scene in scenes for obj in scene.objects))
    alone = {}
    for scene, names in zip(scenes, tokens):
        for tok, obj in zip(names, scene.objects):
            alone.setdefault(tok, obj)
    subsets = [((tok, obj),) for tok, obj in alone.items()]
    for p, q in itertools.combinations(range(len(scenes)), 2):
        subsets += [pair for pair in itertools.product(zip(tokens[p], scenes[p].objects),
                                                       zip(tokens[q], scenes[q].objects))
                    if (pair[0][1].colour, pair[0][1].shape) != (pair[1][1].colour, pair[1][1].shape)]
    prompts = []
    for subset in subsets:
        for _ in range(per_subset):
            background = rng.choice(backgrounds)
            slots = sorted(rng.sample(SLOTS, len(subset)), key=SLOTS.index)
            order = rng.sample(subset, len(subset))
            objects = tuple(replace(obj, slot=s) for (_, obj), s in zip(order, slots))
            phrase = " and ".join(f"{tok} {slot_phrase(s)}" for (tok, _), s in zip(order, slots))
            prompts.append(ToyPrompt(f"a photo of {phrase} on a {background} background",
                                     tuple(tok for tok, _ in order), objects, background, learned))
    return prompts


_SLOT_BY_PHRASE = {slot_phrase(slot): slot for slot in SLOTS}
_PLACED = re.compile(r"(<[^>]+>) (" + "|".join(map(re.escape, _SLOT_BY_PHRASE)) + ")")
_BACKGROUND = re.compile(r"on an? (\w+) background")


def parse_prompt(prompt: str, scene: ToyScene, tokens: list[str]) -> ToyPrompt:
    """What a hand-written prompt asks for ("a photo of <asset0> on the left on a navy background"): each
    token placed in a slot, with its object from the scene, and the background. Every token needs a slot
    and the prompt a background, so the judge can score it."""
    placed = _PLACED.findall(prompt)
    background = _BACKGROUND.search(prompt)
    unplaced = [t for t in tokens if t in prompt and t not in dict(placed)]
    if not placed or unplaced or background is None or background.group(1) not in BACKGROUNDS:
        raise ValueError(f"'{prompt}' does not say where each token goes and on which background "
                         f"(e.g. 'a photo of {tokens[0]} on the left on a navy background'; backgrounds: "
                         f"{', '.join(BACKGROUNDS)})")
    objects = tuple(replace(scene.objects[tokens.index(t)], slot=_SLOT_BY_PHRASE[where]) for t, where in placed)
    return ToyPrompt(prompt, tuple(t for t, _ in placed), objects, background.group(1), scene.objects)


STRAY_KINDS = ("stray_training_slot", "stray_elsewhere", "stray_unprompted", "stray_other")


def stray_kinds(prompt: ToyPrompt, reading) -> list[str]:
    """The kind (one of STRAY_KINDS) of each object the judge sees that the prompt does not ask for there."""
    asked = {(obj.slot, (obj.colour, obj.shape)) for obj in prompt.objects}
    prompted = {(obj.colour, obj.shape) for obj in prompt.objects}
    trained_in = {(obj.colour, obj.shape): obj.slot for obj in prompt.scene_objects}
    kinds = []
    for slot, seen in reading.slots.items():
        if seen is None or (slot, seen) in asked:
            continue
        if seen in prompted:
            kinds.append(STRAY_KINDS[0] if trained_in[seen] == slot else STRAY_KINDS[1])
        else:
            kinds.append(STRAY_KINDS[2] if seen in trained_in else STRAY_KINDS[3])
    return kinds


def score_reading(prompt: ToyPrompt, reading) -> dict[str, float]:
    found = [reading.find(obj.colour, obj.shape) for obj in prompt.objects]
    placed = [obj.slot in slots for obj, slots in zip(prompt.objects, found)]
    background = float(reading.background == prompt.background)
    seen = [obj for obj in reading.slots.values() if obj is not None]
    learned = {(obj.colour, obj.shape) for obj in prompt.scene_objects}
    colours, shapes = {c for c, _ in learned}, {s for _, s in learned}
    strays = stray_kinds(prompt, reading)
    return {
        "identity": float(np.mean([bool(slots) for slots in found])),
        "position": float(np.mean(placed)),
        "background": background,
        "prompt_following": (float(np.mean(placed)) + background) / 2,
        "all_correct": float(all(placed) and background == 1.0),
        "extra_objects": float(len(seen) > len(prompt.objects)),
        "mixed": float(any(obj not in learned and obj[0] in colours and obj[1] in shapes for obj in seen)),
        **{kind: float(strays.count(kind)) for kind in STRAY_KINDS},
    }
