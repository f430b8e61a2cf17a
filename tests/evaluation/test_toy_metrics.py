"""The toy world's judge as the evaluation's identity and prompt scorers, on renders with known truth."""

import random
from dataclasses import replace

import numpy as np
import torch

from break_a_scene.config import ASSETS_DIR
from break_a_scene.evaluation.toy import (
    ToyIdentity,
    ToyPromptFollowing,
    attention_iou,
    toy_prompt_set,
    toy_scores,
)
from break_a_scene.toyworld.benchmark import ToyPrompt
from break_a_scene.toyworld.judges import load_judge
from break_a_scene.toyworld.world import ToyObject, ToyScene, render, sample_scene


def _as_tensor(scene: ToyScene) -> torch.Tensor:
    image, _ = render(scene, 32)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def test_judged_identity_and_prompt_following():
    judge = load_judge(ASSETS_DIR / "toyworld" / "judge.pt")
    scene = sample_scene(random.Random(4), num_objects=2, jitter=False)
    truth = ToyPrompt("p", ("<a>", "<b>"), scene.objects, scene.background, scene.objects)
    other_bg = "navy" if scene.background != "navy" else "white"
    wrong_bg = replace(truth, background=other_bg)
    moved = tuple(replace(o, slot={"left": "right", "right": "left", "middle": "left"}[o.slot]) for o in scene.objects)
    wrong_slots = replace(truth, objects=moved)
    images = _as_tensor(scene).expand(3, -1, -1, -1)
    targets = [truth, wrong_bg, wrong_slots]
    assert ToyIdentity(judge).scores(images, targets).tolist() == [1.0, 1.0, 1.0]  # found anywhere
    assert ToyPromptFollowing(judge).scores(images, targets).tolist() == [1.0, 0.5, 0.5]
    scores = toy_scores(judge, images, targets)
    assert scores["background"] == [1.0, 0.0, 1.0] and scores["position"] == [1.0, 1.0, 0.0]
    metric = ToyIdentity(judge)
    metric.update(images, targets)
    assert float(metric.compute()) == 1.0


def test_toy_prompt_set_names_concepts_and_classes():
    scene = sample_scene(random.Random(1), num_objects=2, jitter=False)
    prompts = toy_prompt_set(scene, ["<a>", "<b>"], per_subset=2, seed=0)
    assert len(prompts) == 6 and [p.concepts for p in prompts][:2] == [(0,), (0,)]
    first = prompts[0]
    assert first.prompt.startswith("a photo of <a> ") and first.target.tokens == ("<a>",)
    assert first.class_prompt == first.prompt.replace("<a>", f"a {scene.objects[0].name}")


def test_attention_iou_by_hand():
    """8 x 8 maps over a 32 px picture with 3 slots of 10.7 px: a square in the middle slot covers cells
    3-4 of rows 3-4 at least half (its silhouette at 32 px is read off the renderer, not assumed)."""
    obj = ToyObject("square", "red", "middle")
    target = ToyPrompt("a photo of <a> in the middle on a navy background", ("<a>",), (obj,), "navy", (obj,))
    _, (mask,) = render(ToyScene((obj,), "navy"), 32)
    cells = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(mask)[None], (8, 8))[0].numpy() >= 0.5
    assert cells.sum() >= 4 and cells[:, :3].sum() == 0 and cells[:, 6:].sum() == 0
    assert attention_iou(target, {"<a>": cells * 0.9 + 0.1}, 32) == 1.0
    left = np.zeros((8, 8), dtype=np.float32)
    left[3:5, 0:2] = 1.0
    assert attention_iou(target, {"<a>": left}, 32) == 0.0
    half = cells.astype(np.float32)
    half[:, : cells.any(axis=0).argmax() + 1] = 0.2  # its first column of cells goes cold
    kept = (half >= 0.5).sum()
    assert attention_iou(target, {"<a>": half}, 32) == kept / cells.sum()
