"""The README's demo picture from a `make demo` run: the input with its masks, then each prompt's images.

    python experiments/toyworld/demo_figure.py outputs/demo docs/toy_demo.png
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from break_a_scene.figures import labelled_grid, masks_overlay
from break_a_scene.scene import load_scene


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="the demo's run folder (holds pipeline/ and samples/)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    manifest = json.loads((args.run / "pipeline" / "break_a_scene.json").read_text())
    scene = load_scene(manifest["scene"])
    names = ", ".join(f"{t} = {c}" for t, c in zip(manifest["tokens"], scene.class_names or []))
    rows = [[scene.image, masks_overlay(scene.image, np.stack(scene.masks))]]
    labels = [f"input and masks ({names})"]
    records = [json.loads(line) for line in (args.run / "samples" / "samples.jsonl").read_text().splitlines()]
    for prompt in dict.fromkeys(r["prompt"] for r in records):
        rows.append([Image.open(args.run / "samples" / r["image"]) for r in records if r["prompt"] == prompt])
        labels.append(prompt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, labels, cell=96).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
