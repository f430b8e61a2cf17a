"""What the extra objects are: in the images of a toy evaluation where the judge sees more objects than the
prompt asks for, each object that is not a prompted concept in its prompted slot, sorted into: a prompted
concept again in the slot it was trained in, a prompted concept again elsewhere, a concept of the scene that
the prompt leaves out, or some other object (a mixed or unknown one).

    python experiments/toyworld/extras.py outputs/evaluation_toyworld_ablations outputs/benchmarks/toyworld12
"""

import argparse
import csv
from collections import Counter, defaultdict
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from break_a_scene.config import ASSETS_DIR
from break_a_scene.scene import image_to_tensor
from break_a_scene.tokens import default_token_names
from break_a_scene.toyworld.benchmark import ToyPrompt, parse_prompt
from break_a_scene.toyworld.judges import Reading, load_judge, read_images
from break_a_scene.toyworld.scenes import read_scene_json

KINDS = ("prompted, in its training slot", "prompted, elsewhere", "unprompted scene concept", "other")


def extra_kinds(target: ToyPrompt, reading: Reading) -> list[str]:
    """The kind of each object the judge sees that the prompt does not ask for where it stands."""
    asked = {(o.slot, (o.colour, o.shape)) for o in target.objects}
    prompted = {(o.colour, o.shape) for o in target.objects}
    trained_in = {(o.colour, o.shape): o.slot for o in target.scene_objects}
    kinds = []
    for slot, seen in reading.slots.items():
        if seen is None or (slot, seen) in asked:
            continue
        if seen in prompted:
            kinds.append(KINDS[0] if trained_in[seen] == slot else KINDS[1])
        else:
            kinds.append(KINDS[2] if seen in trained_in else KINDS[3])
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path, help="a toy evaluation's out_dir (<method>/<scene>/<seed>/rows.csv)")
    parser.add_argument("benchmark", type=Path, help="the scene set it ran on (<scene>/scene.json)")
    parser.add_argument("--methods", nargs="*", help="only these methods (default: every method folder)")
    args = parser.parse_args()
    judge = load_judge(ASSETS_DIR / "toyworld" / "judge.pt")
    counts: dict[str, Counter] = defaultdict(Counter)
    images_with_extras: Counter = Counter()
    rows_files = sorted(args.out_dir.glob("*/scene_*/seed_*/rows.csv"))
    for rows_file in tqdm(rows_files, desc="trials"):
        trial = rows_file.parent
        method = trial.parent.parent.name
        if args.methods and method not in args.methods:
            continue
        scene = read_scene_json(args.benchmark / trial.parent.name)
        tokens = default_token_names(len(scene.objects))
        with rows_file.open() as f:
            rows = [r for r in csv.DictReader(f) if float(r["extra_objects"]) == 1.0]
        if not rows:
            continue
        images = torch.stack([image_to_tensor(Image.open(trial / r["image"]), 32) for r in rows])
        for row, reading in zip(rows, read_images(judge, images)):
            images_with_extras[method] += 1
            counts[method].update(extra_kinds(parse_prompt(row["prompt"], scene, tokens), reading))
    print(f"| method | images with extra objects | {' | '.join(KINDS)} |")
    print("|---|---|" + "---|" * len(KINDS))
    for method in sorted(counts):
        total = sum(counts[method].values())
        shares = " | ".join(f"{counts[method][k] / total:.2f}" for k in KINDS)
        print(f"| {method} | {images_with_extras[method]} | {shares} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
