import random

import torch

from break_a_scene.config import ASSETS_DIR
from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.judges import held_out_accuracy, load_judge, read_images
from break_a_scene.toyworld.world import ToyObject, ToyScene, render, sample_scene

JUDGE = ASSETS_DIR / "toyworld" / "judge.pt"


def test_shipped_judge_is_accurate_on_fresh_renders():
    accuracy = held_out_accuracy(load_judge(JUDGE), count=300, seed=999)
    assert min(accuracy.values()) >= 0.95, accuracy


def test_judge_reads_a_scene_back():
    scene = ToyScene((ToyObject("star", "orange", "left"), ToyObject("ring", "blue", "right")), "teal")
    image = image_to_tensor(render(scene)[0], 32)[None]
    (reading,) = read_images(load_judge(JUDGE), image)
    assert reading.background == "teal"
    assert reading.slots == {"left": ("orange", "star"), "middle": None, "right": ("blue", "ring")}
    assert reading.find("blue", "ring") == ["right"] and reading.find("blue", "star") == []


def test_judge_tolerates_noise():
    rng = random.Random(5)
    scenes = [sample_scene(rng) for _ in range(64)]
    images = torch.stack([image_to_tensor(render(s)[0], 32) for s in scenes])
    noisy = images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    readings = read_images(load_judge(JUDGE), noisy)
    right = sum(r.background == s.background and all(r.slots[o.slot] == (o.colour, o.shape) for o in s.objects)
                for r, s in zip(readings, scenes))
    assert right / len(scenes) >= 0.9
