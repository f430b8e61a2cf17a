"""The toy world's judges as the evaluation's identity and prompt scorers, and its prompt set.

Identity: the share of the prompt's concepts whose object (colour and shape) the judge finds anywhere.
Prompt following: the background as prompted and each found object in its prompted slot (mean of both).
"""

from __future__ import annotations

import torch

from break_a_scene.evaluation.metrics import MeanScore
from break_a_scene.evaluation.prompts import EvalPrompt
from break_a_scene.toyworld.benchmark import ToyPrompt, benchmark_prompts, score_reading
from break_a_scene.toyworld.judges import ToyJudge, read_images
from break_a_scene.toyworld.world import ToyScene


def toy_prompt_set(scene: ToyScene, tokens: list[str], per_subset: int = 2, seed: int = 0) -> list[EvalPrompt]:
    """Each non-empty token subset `per_subset` times in new slots on a new background (ground truth kept)."""
    prompts = []
    for toy in benchmark_prompts(scene, tokens, per_subset, seed):
        concepts = tuple(tokens.index(t) for t in toy.tokens)
        class_prompt = toy.prompt
        for token, concept in zip(toy.tokens, concepts):
            class_prompt = class_prompt.replace(token, f"a {scene.objects[concept].name}")
        prompts.append(EvalPrompt(toy.prompt, class_prompt, concepts, target=toy))
    return prompts


class _JudgedScore(MeanScore):
    key: str

    def __init__(self, judge: ToyJudge, **kwargs):
        super().__init__(**kwargs)
        self.judge = judge.eval()

    def scores(self, images: torch.Tensor, targets: list[ToyPrompt]) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] at the judge's resolution."""
        return torch.tensor(toy_scores(self.judge, images, targets)[self.key], dtype=torch.float64)


class ToyIdentity(_JudgedScore):
    key = "identity"


class ToyPromptFollowing(_JudgedScore):
    key = "prompt_following"


@torch.no_grad()
def toy_scores(judge: ToyJudge, images: torch.Tensor, targets: list[ToyPrompt]) -> dict[str, list[float]]:
    """Every toy metric per image: identity, prompt_following, position, background, all_correct."""
    rows = [score_reading(t, r) for t, r in zip(targets, read_images(judge, images * 2 - 1))]
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
