"""Prompt following of a toy-world model, scored by the shipped judge, with fixed prompts and seeds.

    python experiments/toyworld/measure_quality.py --model src/break_a_scene/assets/toyworld/model --guidance 3
    python experiments/toyworld/measure_quality.py --model src/break_a_scene/assets/toyworld/mmdit \
        --family break_a_scene.families.toy_mmdit.ToyMMDiT --guidance 3
"""

import argparse
import json
from pathlib import Path

import torch

from break_a_scene.config import ASSETS_DIR
from break_a_scene.families.base import family_named
from break_a_scene.models import read_model_index
from break_a_scene.toyworld.judges import load_judge
from break_a_scene.toyworld.quality import measure, prompt_cases

BARS = {"colour": 0.90, "shape": 0.75, "background": 0.70, "position": 0.70, "all_correct": 0.40}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ASSETS_DIR / "toyworld" / "model"))
    parser.add_argument("--judge", default=str(ASSETS_DIR / "toyworld" / "judge.pt"))
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    parser.add_argument("--prompts", type=int, default=96, help="per kind (single- and two-object)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    parser.add_argument("--family", default=None, help="the model family's class (default: by the pipeline class)")
    args = parser.parse_args()
    family = family_named(args.family, read_model_index(Path(args.model))["_class_name"])
    pipe = family.load(args.model).pipeline()
    judge = load_judge(args.judge)
    single, double = prompt_cases(args.prompts, 1, seed=1), prompt_cases(args.prompts, 2, seed=2)
    summary, per_prompt = {}, {}
    for guidance in args.guidance:
        rows = (measure(pipe, judge, single, guidance, args.steps, family=family)
                + measure(pipe, judge, double, guidance, args.steps, family=family))
        per_prompt[f"guidance {guidance}"] = rows
        keys = ["colour", "shape", "colour+shape", "position", "background", "objects", "all_correct",
                "high_frequency", "high_frequency_render"]
        result = {k: sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r) for k in keys}
        summary[f"guidance {guidance}"] = result
        print(f"guidance {guidance}: " + ", ".join(f"{k} {v:.0%}" for k, v in result.items()
                                                   if not k.startswith("high_frequency")))
        print(f"  spectral energy at >= 0.25 cycles/px: samples {result['high_frequency']:.3f}, "
              f"true renders of the same prompts {result['high_frequency_render']:.3f}")
        print("  bars: " + ", ".join(f"{k} {'met' if result[k] >= bar else 'MISSED'}" for k, bar in BARS.items()))
    if args.out:
        # the rows let a test re-measure a few prompts and compare them one by one
        args.out.write_text(json.dumps({"prompts_per_kind": args.prompts, "steps": args.steps, **summary,
                                        "rows": per_prompt}, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
