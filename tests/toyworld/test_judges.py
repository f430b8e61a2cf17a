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


def test_demo_reading_of_true_renders_is_all_right(tmp_path):
    """experiments/toyworld/judge_demo.py on a run folder whose "samples" are true renders of the prompts."""
    import json
    import subprocess
    import sys
    from dataclasses import replace

    from break_a_scene.config import ASSETS_DIR
    from break_a_scene.toyworld.scenes import read_scene_json
    from break_a_scene.toyworld.world import ToyScene, render

    scene_dir = ASSETS_DIR / "scenes" / "toy_star_ring"
    scene = read_scene_json(scene_dir)
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "break_a_scene.json").write_text(
        json.dumps({"scene": str(scene_dir), "tokens": ["<asset0>", "<asset1>"], "resolution": 32}))
    (tmp_path / "samples").mkdir()
    wanted = {"a photo of <asset1> on the left on a navy background":
              ToyScene((replace(scene.objects[1], slot="left"),), "navy"),
              "a photo of <asset0> in the middle on a beige background":
              ToyScene((replace(scene.objects[0], slot="middle"),), "gray"),  # wrong background
              "a photo of <asset0> on the left on a teal background": scene}  # the ring comes along
    records = []
    for n, (prompt, truth) in enumerate(wanted.items()):
        render(truth, 32)[0].save(tmp_path / "samples" / f"{n}.png")
        records.append(json.dumps({"image": f"{n}.png", "prompt": prompt, "seed": 0}))
    (tmp_path / "samples" / "samples.jsonl").write_text("\n".join(records) + "\n")
    done = subprocess.run([sys.executable, "experiments/toyworld/judge_demo.py", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ("<asset1> on the left on a navy background: objects found 100%, in their slots 100%, "
            "background right 1/1, all right 1/1, extra objects 0/1, all right with only those 1/1") in done.stdout
    assert "teal background: objects found 100%, in their slots 100%, background right 1/1, all right 1/1, " \
        "extra objects 1/1, all right with only those 0/1" in done.stdout
    assert "beige background: objects found 100%, in their slots 100%, background right 0/1, all right 0/1" \
        in done.stdout


def test_strays_sorted_by_kind_on_true_renders(tmp_path):
    """The judge's reading of true renders, scored: a prompted star drawn again in its training slot (the
    left), and the ring that the prompt leaves out; experiments/toyworld/extras.py sums them from the rows."""
    import csv
    import subprocess
    import sys
    from dataclasses import replace

    from break_a_scene.toyworld.benchmark import STRAY_KINDS, parse_prompt, score_reading
    from break_a_scene.toyworld.scenes import read_scene_json

    scene = read_scene_json(ASSETS_DIR / "scenes" / "toy_star_ring")
    star, ring = scene.objects  # star trained on the left, ring on the right
    drawn = {"a photo of <asset0> in the middle on a navy background":
             ToyScene((star, replace(star, slot="middle")), "navy"),
             "a photo of <asset1> on the left on a navy background":
             ToyScene((replace(ring, slot="left"), replace(star, slot="middle")), "navy")}
    images = torch.stack([image_to_tensor(render(picture, 32)[0], 32) for picture in drawn.values()])
    readings = read_images(load_judge(JUDGE), images)
    scores = [score_reading(parse_prompt(prompt, scene, ["<asset0>", "<asset1>"]), reading)
              for prompt, reading in zip(drawn, readings)]
    assert [[s[k] for k in STRAY_KINDS] for s in scores] == [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    assert [s["extra_objects"] for s in scores] == [1.0, 1.0]

    trial = tmp_path / "evaluation" / "m" / "scene_000" / "seed_0"
    trial.mkdir(parents=True)
    meta = {"method": "m", "scene": "scene_000", "train_seed": 0, "class_prompt": "", "tokens": "", "concepts": 1,
            "sample_seed": 0, "image": ""}  # a trial's rows as bas-evaluate writes them
    with open(trial / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*meta, "prompt", "extra_objects", *STRAY_KINDS])
        writer.writeheader()
        for prompt, row in zip(drawn, scores):
            writer.writerow({**meta, "prompt": prompt, **{k: row[k] for k in ["extra_objects", *STRAY_KINDS]}})
        writer.writerow({**meta, "prompt": "misplaced only", "extra_objects": 0.0, "stray_other": 0.0,
                         "stray_training_slot": 0.0, "stray_elsewhere": 1.0, "stray_unprompted": 0.0})
    done = subprocess.run([sys.executable, "experiments/toyworld/extras.py", str(tmp_path / "evaluation")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| m | 2 | 0.50 | 0.00 | 0.50 | 0.00 |" in done.stdout  # the third row has no extra objects


def test_judge_reads_a_larger_picture_as_its_own_size():
    """A 64 px model's pictures are averaged down to the judge's 32 px: 64 random scenes rendered at 64 px read
    as they do rendered at 32 px, but for at most 2 slots or backgrounds."""
    rng = random.Random(11)
    scenes = [sample_scene(rng) for _ in range(64)]
    judge = load_judge(JUDGE)
    small, large = (read_images(judge, torch.stack([image_to_tensor(render(s, size)[0], size) for s in scenes]))
                    for size in (32, 64))
    differ = sum(a.background != b.background or a.slots != b.slots for a, b in zip(small, large))
    assert differ <= 2, differ
