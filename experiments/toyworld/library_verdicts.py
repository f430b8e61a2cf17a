"""A concept library's verdicts in the toy world (docs/toyworld.md, "A concept library"), from a toyworld_library
sweep (trials named <scene>+<scene>) and the one-scene Break-A-Scene rows of the same scenes and training seeds:

- images entirely right (all_correct) on prompts with one concept from each picture, for each library method,
  against Break-A-Scene's own two-concept prompts on the library's two scenes (the mean of the two scenes):
  the goal is "at least as often";
- each method against the separately trained assets composed (`--reference`, or another method): images
  entirely right, identity and extra objects on the cross prompts, identity on one-concept prompts;
- extra objects on the cross prompts, against Break-A-Scene's two-concept prompts.

Units are (library, training seed); each difference is paired by unit, with a bootstrap 95% interval.

    python experiments/toyworld/library_verdicts.py outputs/evaluation_toyworld_library \
        experiments/toyworld/results/toyworld_ablations
"""

import argparse
from pathlib import Path

import numpy as np

from break_a_scene.evaluation.aggregate import load_rows, unit_means
from break_a_scene.evaluation.splits import rows_split, split_line
from break_a_scene.evaluation.stats import mean_ci, paired_difference

METRICS = ["all_correct", "identity", "extra_objects"]


def within_scene(single: list[dict], libraries: list[tuple[str, str]], metric: str) -> dict[tuple[str, str], float]:
    """Break-A-Scene on each library's two scenes, its two-concept prompts: the mean of the scenes' unit means."""
    per_scene = unit_means([r for r in single if int(r["concepts"]) == 2], metric)
    values = {}
    for library, seed in libraries:
        scenes = [per_scene.get((scene, seed)) for scene in library.split("+")]
        if all(v is not None for v in scenes):
            values[(library, seed)] = float(np.mean(scenes))
    return values


def cell(stats: tuple) -> str:
    mean, low, high = stats[:3]
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def over_units(rows: list[dict], metric: str) -> str:
    return cell(mean_ci(list(unit_means(rows, metric).values())))


def signed(stats: tuple) -> str:
    mean, low, high, pairs = stats
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] ({pairs})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("library", type=Path, help="the toyworld_library sweep's evaluation.out_dir")
    parser.add_argument("single", type=Path, help="the one-scene sweep's folder with break_a_scene/ rows")
    parser.add_argument("--reference", default="composed_lora",
                        help="the method every other one is paired against (default: the composed assets)")
    args = parser.parse_args()
    rows = load_rows(args.library)
    single = load_rows(args.single / "break_a_scene")
    cross = [r for r in rows if int(r["concepts"]) == 2]
    alone = [r for r in rows if int(r["concepts"]) == 1]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    units = sorted({(r["scene"], r["train_seed"]) for r in rows})  # sorted: the bootstrap sees one order
    base = {m: within_scene(single, units, m) for m in METRICS}

    lines = [split_line(rows_split(args.library, rows), rows), "",
             "| method | cross all right | cross identity | cross extra objects | identity alone |",
             "|---|---|---|---|---|"]
    for method in methods:
        mine = [r for r in cross if r["method"] == method]
        cells = [over_units(mine, m) for m in METRICS]
        cells.append(over_units([r for r in alone if r["method"] == method], "identity"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("| break_a_scene, its own two-concept prompts | "
                 + " | ".join(cell(mean_ci(list(base[m].values()))) for m in METRICS) + " | |")
    lines += ["", "Paired by (library, training seed), bootstrap 95% intervals (pairs):", ""]
    for method in methods:
        mine = [r for r in cross if r["method"] == method]
        for metric in ("all_correct", "extra_objects"):
            lines.append(f"- {method} cross {metric} - break_a_scene within-picture: "
                         f"{signed(paired_difference(base[metric], unit_means(mine, metric)))}")
    reference = args.reference
    for method in methods:
        if method == reference or reference not in methods:
            continue
        looks = [(f"cross {m}", cross, m) for m in METRICS] + [("identity alone", alone, "identity")]
        parts = []
        for name, subset, metric in looks:
            ref = unit_means([r for r in subset if r["method"] == reference], metric)
            mine = unit_means([r for r in subset if r["method"] == method], metric)
            parts.append(f"{name} {signed(paired_difference(ref, mine))}")
        lines.append(f"- {method} - {reference}: " + "; ".join(parts))
    text = "\n".join(lines)
    (args.library / "library_verdicts.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
