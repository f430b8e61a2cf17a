"""The README's demo picture from a `make demo` run: the input with its masks, then each prompt's images; with
several runs of the same scene and prompts (`make demo`: the method and the combined variant), each prompt's rows
one above the other, labelled with the run's variant.

    python experiments/toyworld/demo_figure.py outputs/demo docs/toy_demo.png
    python experiments/toyworld/demo_figure.py outputs/demo outputs/demo_beyond outputs/demo_side_by_side.png
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from break_a_scene.figures import labelled_grid, masks_overlay
from break_a_scene.scene import load_scene


def variant_of(run: Path) -> str:
    """The variant a run was trained with (its Hydra record), for the figure's labels."""
    overrides = (run / ".hydra" / "overrides.yaml")
    names = [line.split("=", 1)[1] for line in overrides.read_text().split() if line.startswith("variant=")] \
        if overrides.is_file() else []
    return names[0] if names else "break_a_scene"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path, nargs="+", help="the demo's run folders (each holds pipeline/ and samples/)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    manifest = json.loads((args.runs[0] / "pipeline" / "break_a_scene.json").read_text())
    scene = load_scene(manifest["scene"])
    names = ", ".join(f"{t} = {c}" for t, c in zip(manifest["tokens"], scene.class_names or []))
    rows = [[scene.image, masks_overlay(scene.image, np.stack(scene.masks))]]
    labels = [f"input and masks ({names})"]
    records = {run: [json.loads(line) for line in (run / "samples" / "samples.jsonl").read_text().splitlines()]
               for run in args.runs}
    for prompt in dict.fromkeys(r["prompt"] for r in records[args.runs[0]]):
        for run in args.runs:
            rows.append([Image.open(run / "samples" / r["image"]) for r in records[run] if r["prompt"] == prompt])
            labels.append(f"{variant_of(run)}: {prompt}" if len(args.runs) > 1 else prompt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, labels, cell=96).save(args.out)
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
