"""Whether the paper's ablation directions reproduce in the toy world, from a `toyworld_ablations` sweep:
masked loss and phase 1 help prompt following; the attention loss and union sampling help identity in
multi-concept prompts. Means and 95% intervals over (scene, training seed) units.

    python experiments/toyworld/directions.py outputs/evaluation_toyworld_ablations
"""

import argparse
from pathlib import Path

from break_a_scene.evaluation.aggregate import load_rows, markdown_table, summarize

DIRECTIONS = [("no_masked_loss", "prompt_following"), ("no_phase1", "prompt_following"),
              ("no_attention_loss", "identity_multi"), ("no_union_sampling", "identity_multi")]
METRICS = ["identity", "identity_multi", "prompt_following", "position", "background", "all_correct"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    rows = load_rows(args.folder)
    for row in rows:  # identity counted on multi-concept prompts only
        row["identity_multi"] = row["identity"] if int(row["concepts"]) >= 2 else ""
    table = summarize(rows, METRICS)
    lines = [markdown_table(table, METRICS), ""]
    for ablation, metric in DIRECTIONS:
        if "break_a_scene" not in table or ablation not in table:
            continue
        full, ablated = table["break_a_scene"][metric], table[ablation][metric]
        if full[0] > ablated[0]:
            verdict = "reproduces" + (" (intervals separate)" if full[1] > ablated[2] else " (intervals overlap)")
        else:
            verdict = "does NOT reproduce"
        lines.append(f"- {metric}: break_a_scene {full[0]:.3f} vs {ablation} {ablated[0]:.3f}: {verdict}")
    text = "\n".join(lines)
    (args.folder / "directions.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
