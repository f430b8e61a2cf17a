"""Train the toy world's judge on generator ground truth, report held-out accuracy, ship it (fp16).

    python experiments/toyworld/train_judges.py            # the shipped judge: 1500 steps, seed 0
"""

import argparse
import json
from pathlib import Path

import torch

from break_a_scene.config import ASSETS_DIR
from break_a_scene.toyworld.judges import held_out_accuracy, save_judge, train_judge


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR / "toyworld")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    judge = train_judge(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_judge(judge, args.out / "judge.pt")
    from break_a_scene.toyworld.judges import load_judge

    accuracy = held_out_accuracy(load_judge(args.out / "judge.pt"), count=2000)  # as shipped (fp16 weights)
    report = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "held_out_renders": 2000,
              "accuracy": accuracy}
    (args.out / "judge_accuracy.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
