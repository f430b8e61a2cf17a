"""Prompt sets: the paper's 10 templates x every non-empty subset of a scene's tokens, or a user's file.

Each prompt comes twice: with the learned tokens (what is generated) and with each token replaced by its
concept's class name (what CLIP prompt similarity compares against: "a photo of a cat at the beach").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from break_a_scene.errors import UserInputError
from break_a_scene.inputs import read_text

PAPER_TEMPLATES = (
    "a photo of {} at the beach",
    "a photo of {} in the jungle",
    "a photo of {} in the snow",
    "a photo of {} in the street",
    "a photo of {} on top of a pink fabric",
    "a photo of {} on top of a wooden floor",
    "a photo of {} with a city in the background",
    "a photo of {} with a mountain in the background",
    "a photo of {} with the Eiffel tower in the background",
    "a photo of {} floating on top of water",
)
JOINER = " and "


@dataclass(frozen=True)
class EvalPrompt:
    prompt: str  # with the learned tokens
    class_prompt: str  # tokens replaced by "a <class name>"
    concepts: tuple[int, ...]  # indices of the scene's concepts the prompt names, in prompt order
    target: Any = None  # a world's ground truth for the prompt (the toy world's `ToyPrompt`)


def _article(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def read_templates(path: str | Path) -> tuple[str, ...]:
    """One template per line with a single `{}` where the tokens go; blank lines and `#` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"prompt file '{path}' does not exist (evaluation.prompts.templates).")
    templates = []
    for number, line in enumerate(read_text(path, "prompt file").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise UserInputError(f"{path}:{number}: a template needs exactly one '{{}}' for the tokens: {line!r}")
        templates.append(line)
    if not templates:
        raise UserInputError(f"prompt file '{path}' has no templates.")
    return tuple(templates)


def prompt_set(tokens: list[str], class_names: list[str], templates: tuple[str, ...] = PAPER_TEMPLATES,
               max_concepts: int | None = None) -> list[EvalPrompt]:
    """Every template x every non-empty token subset (up to `max_concepts` tokens), subsets in index order."""
    if len(tokens) != len(class_names):
        raise UserInputError(f"{len(tokens)} tokens but {len(class_names)} class names; every concept of an "
                             "evaluated scene needs a class name (classes.txt in the scene folder).")
    largest = len(tokens) if max_concepts is None else min(max_concepts, len(tokens))
    prompts = []
    for k in range(1, largest + 1):
        for subset in itertools.combinations(range(len(tokens)), k):
            for template in templates:
                prompts.append(EvalPrompt(
                    template.format(JOINER.join(tokens[i] for i in subset)),
                    template.format(JOINER.join(_article(class_names[i]) for i in subset)),
                    subset,
                ))
    return prompts
