"""Local editing by example, measured in the toy world: each learned token edited into an empty slot of new
toy pictures (another object elsewhere, another background), through `bas-edit`'s own function. The judge
says whether the token's object appears in the masked slot, and whether the other object and the background
are still there; `edit.json`'s figures say how far pixels outside the mask moved before the paste.

    python experiments/toyworld/edit_check.py outputs/demo/pipeline --out outputs/edit_check
"""

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from break_a_scene.config import ASSETS_DIR
from break_a_scene.editing import edit
from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.benchmark import slot_phrase
from break_a_scene.toyworld.judges import load_judge, read_images
from break_a_scene.toyworld.scenes import read_scene_json
from break_a_scene.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, SLOTS, ToyObject, ToyScene, render


def case(rng: random.Random, target: ToyObject, learned: set[tuple[str, str]], training_slot: bool):
    """A picture with one other object, the slot to fill (the token's training slot, or another) and its
    region: the token's object's silhouette there, dilated by 2 px (a loose box a user would draw)."""
    while (other := (rng.choice(list(COLOURS)), rng.choice(SHAPES))) in learned:
        pass
    if training_slot:
        slot = target.slot
        other_slot = rng.choice([s for s in SLOTS if s != slot])
    else:
        other_slot, slot = rng.sample([s for s in SLOTS if s != target.slot], 2)
    background = rng.choice(list(BACKGROUNDS))
    picture, _ = render(ToyScene((ToyObject(other[1], other[0], other_slot),), background), 32)
    _, (silhouette,) = render(ToyScene((ToyObject(target.shape, target.colour, slot),), background), 32)
    region = Image.fromarray(((silhouette > 0.5) * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(5))
    return picture, region, ToyObject(other[1], other[0], other_slot), slot, background


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pipeline", type=Path, help="an exported toy-world pipeline (trained on a toy scene)")
    parser.add_argument("--out", type=Path, default=Path("outputs/edit_check"))
    parser.add_argument("--cases", type=int, default=8, help="pictures per token")
    parser.add_argument("--images", type=int, default=2, help="edits per picture")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--describe-all", action="store_true",
                        help="the prompt names the picture's other object too (default: only the token's)")
    parser.add_argument("--training-slot", action="store_true",
                        help="edit each token into the slot it was learned in (default: into the other two)")
    args = parser.parse_args()
    manifest = json.loads((args.pipeline / "break_a_scene.json").read_text())
    scene = read_scene_json(manifest["scene"])
    learned = {(o.colour, o.shape) for o in scene.objects}
    judge = load_judge(ASSETS_DIR / "toyworld" / "judge.pt")
    rng = random.Random(0)
    where = "its training slot" if args.training_slot else "a slot other than its training slot"
    where += ", prompts naming the other object too" if args.describe_all else ", prompts naming only the token"
    print(f"bas-edit in the toy world, {args.pipeline}: each token into {where}, {args.cases} pictures x "
          f"{args.images} edits per token, {args.steps} steps, guidance {args.guidance}:")
    for token, target in zip(manifest["tokens"], scene.objects):
        found = kept = backgrounds = 0
        moved, moved_kept = [], []
        for k in range(args.cases):
            picture, region, other, slot, background = case(rng, target, learned, args.training_slot)
            folder = args.out / token.strip("<>") / f"case_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / "input.png")
            region.save(folder / "region.png")
            prompt = f"a photo of {token} {slot_phrase(slot)} on a {background} background"
            if args.describe_all:
                prompt = (f"a photo of a {other.colour} {other.shape} {slot_phrase(other.slot)} and {token} "
                          f"{slot_phrase(slot)} on a {background} background")
            records = edit(str(args.pipeline), str(folder / "input.png"), str(folder / "region.png"), prompt,
                           str(folder), num_images=args.images, num_inference_steps=args.steps,
                           guidance_scale=args.guidance, progress=False)
            images = torch.stack([(image_to_tensor(Image.open(folder / r["image"]), 32) + 1) / 2 for r in records])
            for reading, record in zip(read_images(judge, images * 2 - 1), records):
                found += slot in reading.find(target.colour, target.shape)
                kept += other.slot in reading.find(other.colour, other.shape)
                backgrounds += reading.background == background
                moved.append(record["outside_max_change"])
                moved_kept.append(record["kept_max_change"])
        n = args.cases * args.images
        print(f"  {token} ({target.colour} {target.shape}): in the masked slot {found}/{n}, the other object kept "
              f"{kept}/{n}, background kept {backgrounds}/{n}; before the paste, pixels outside the mask moved by "
              f"at most {max(moved):.0f}/255, away from the mask's latent cells {max(moved_kept):.1f}/255")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
