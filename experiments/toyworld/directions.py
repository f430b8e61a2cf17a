"""Whether the paper's ablation directions reproduce in the toy world, from a `toyworld_ablations` sweep:
masked loss and phase 1 help prompt following; the attention loss and union sampling help identity in
multi-concept prompts. Means and 95% intervals over (scene, training seed) units, and for each direction the
paired difference (Break-A-Scene minus the ablation, paired by unit) with its bootstrap 95% interval: the
verdict is "reproduces" when that interval is above 0, "reversed" when below, "undecided" when it holds 0.
Then a closer look at each ablation, on prompts with 2+ tokens: the entanglement readings (extra objects,
mixed objects, attention IoU, copies in the training slot or elsewhere), and identity on 3-object scenes alone.

    python experiments/toyworld/directions.py outputs/evaluation_toyworld_ablations
"""

import argparse
from pathlib import Path

from break_a_scene.evaluation.aggregate import load_rows, markdown_table, summarize, unit_means
from break_a_scene.evaluation.splits import rows_split, split_line
from break_a_scene.evaluation.stats import paired_difference

DIRECTIONS = [("no_masked_loss", "prompt_following"), ("no_phase1", "prompt_following"),
              ("no_attention_loss", "identity_multi"), ("no_union_sampling", "identity_multi")]
METRICS = ["identity", "identity_multi", "prompt_following", "position", "background", "all_correct"]
CLOSER = ["extra_objects", "mixed", "attention_iou", "stray_training_slot", "stray_elsewhere"]


def paired(rows: list[dict], ablation: str, metric: str) -> tuple[float, float, float, int]:
    """Break-A-Scene minus the ablation, paired by (scene, seed): mean, 95% interval, pairs."""
    full = unit_means([r for r in rows if r["method"] == "break_a_scene"], metric)
    ablated = unit_means([r for r in rows if r["method"] == ablation], metric)
    return paired_difference(ablated, full)


def closer_look(rows: list[dict], ablation: str) -> str:
    """One line: the closer-look differences that have pairs, each with its number of pairs."""
    objects: dict[str, int] = {}  # a scene's objects: its largest prompted subset
    for row in rows:
        objects[row["scene"]] = max(objects.get(row["scene"], 0), int(row["concepts"]))
    multi = [r for r in rows if int(r["concepts"]) >= 2]
    three = [r for r in multi if objects[r["scene"]] >= 3]
    looks = [(metric, multi) for metric in CLOSER if metric in rows[0]] + [("identity on 3-object scenes", three)]
    parts = []
    for name, subset in looks:
        mean, low, high, pairs = paired(subset, ablation, name.split(" ")[0])
        if pairs:
            parts.append(f"{name} {mean:+.3f} [{low:+.3f}, {high:+.3f}] ({pairs})")
    return f"- break_a_scene - {ablation}, prompts with 2+ tokens: " + ("; ".join(parts) or "no pairs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    rows = load_rows(args.folder)
    for row in rows:  # identity counted on multi-concept prompts only
        row["identity_multi"] = row["identity"] if int(row["concepts"]) >= 2 else ""
    metrics = [m for m in METRICS if m in rows[0]]
    table = summarize(rows, metrics)
    lines = [split_line(rows_split(args.folder, rows), rows), "", markdown_table(table, metrics), ""]
    for ablation, metric in DIRECTIONS:
        if "break_a_scene" not in table or ablation not in table:
            continue
        mean, low, high, pairs = paired(rows, ablation, metric)
        verdict = "reproduces" if low > 0 else "reversed" if high < 0 else "undecided"
        lines.append(f"- {metric}: break_a_scene - {ablation} = {mean:+.3f} [{low:+.3f}, {high:+.3f}] "
                     f"over {pairs} (scene, seed) pairs: {verdict}")
    lines += ["", "Closer look ((scene, seed) pairs in brackets):"]
    lines += [closer_look(rows, ablation) for ablation, _ in DIRECTIONS
              if ablation in table and "break_a_scene" in table]
    text = "\n".join(lines)
    (args.folder / "directions.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
