"""The toy world's judges as the evaluation's identity and prompt scorers, and its prompt set.

Identity: the share of the prompt's concepts whose object (colour and shape) the judge finds anywhere.
Prompt following: the background as prompted and each found object in its prompted slot (mean of both).
Attention IoU: where each token's cross-attention falls against where its object should be drawn.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from break_a_scene.evaluation.metrics import MeanScore
from break_a_scene.evaluation.prompts import EvalPrompt
from break_a_scene.toyworld.benchmark import ToyPrompt, benchmark_prompts, library_prompts, score_reading
from break_a_scene.toyworld.judges import ToyJudge, read_images
from break_a_scene.toyworld.world import ToyScene, render


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


def toy_library_prompt_set(scenes: list[ToyScene], tokens: list[list[str]], per_subset: int = 2,
                           seed: int = 0) -> list[EvalPrompt]:
    """A concept library's prompts (each concept alone, each pair across two pictures); `tokens[p]` names
    picture p's objects in order."""
    flat = list(dict.fromkeys(t for names in tokens for t in names))
    names = {t: obj.name for scene, toks in zip(scenes, tokens) for t, obj in zip(toks, scene.objects)}
    prompts = []
    for toy in library_prompts(scenes, tokens, per_subset, seed):
        class_prompt = toy.prompt
        for token in toy.tokens:
            class_prompt = class_prompt.replace(token, f"a {names[token]}")
        prompts.append(EvalPrompt(toy.prompt, class_prompt, tuple(flat.index(t) for t in toy.tokens), target=toy))
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


def attention_iou(target: ToyPrompt, attention: dict[str, np.ndarray], resolution: int) -> float:
    """Mean over the prompt's tokens of the IoU between the token's map (at or above half its maximum) and
    its object's silhouette in the prompted slot, both at the map's size (cells at least half covered)."""
    _, masks = render(ToyScene(target.objects, target.background), resolution)
    ious = []
    for token, mask in zip(target.tokens, masks):
        heat = attention[token]
        cells = F.adaptive_avg_pool2d(torch.from_numpy(mask)[None], heat.shape).squeeze(0).numpy() >= 0.5
        hot = heat >= 0.5 * heat.max()
        ious.append((hot & cells).sum() / max((hot | cells).sum(), 1))
    return float(np.mean(ious))
