"""The judge's reading of a `make demo` run: for each prompt, the share of its tokens' objects (colour and
shape) found and found in the prompted slot, over its images, and in how many images the background is as
prompted, everything is right, and in how many images more objects are drawn than prompted (a concept
drawn twice or leaking in; "only those" counts the images that are all right without any).

    python experiments/toyworld/judge_demo.py outputs/demo [outputs/demo_beyond ...]
"""

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from break_a_scene.config import ASSETS_DIR
from break_a_scene.evaluation.toy import toy_scores
from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.benchmark import parse_prompt
from break_a_scene.toyworld.judges import load_judge
from break_a_scene.toyworld.scenes import read_scene_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path, nargs="+", help="the demo's run folders (each holds pipeline/ and samples/)")
    for run in parser.parse_args().runs:
        read(run)


def read(run: Path) -> None:
    """Print the judge's reading of one run's samples."""
    manifest = json.loads((run / "pipeline" / "break_a_scene.json").read_text())
    scene = read_scene_json(manifest["scene"])
    records = [json.loads(line) for line in (run / "samples" / "samples.jsonl").read_text().splitlines()]
    judge = load_judge(ASSETS_DIR / "toyworld" / "judge.pt")
    names = ", ".join(f"{t} = {o.colour} {o.shape}" for t, o in zip(manifest["tokens"], scene.objects))
    print(f"the judge's reading of {run / 'samples'} ({names}):")
    for prompt in dict.fromkeys(r["prompt"] for r in records):
        target = parse_prompt(prompt, scene, manifest["tokens"])
        paths = [run / "samples" / r["image"] for r in records if r["prompt"] == prompt]
        images = torch.stack([(image_to_tensor(Image.open(p), manifest["resolution"]) + 1) / 2 for p in paths])
        scores = toy_scores(judge, images, [target] * len(paths))
        n = len(paths)
        share = {k: sum(v) / n for k, v in scores.items()}
        count = {k: round(sum(v)) for k, v in scores.items()}
        only = sum(right and not extra for right, extra in zip(scores["all_correct"], scores["extra_objects"]))
        print(f"  {prompt}: objects found {share['identity']:.0%}, in their slots {share['position']:.0%}, "
              f"background right {count['background']}/{n}, all right {count['all_correct']}/{n}, "
              f"extra objects {count['extra_objects']}/{n}, all right with only those {round(only)}/{n}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
