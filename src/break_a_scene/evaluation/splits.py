"""Which scenes a toy verdict was decided on. The dev split is where settings, variants and thresholds are
chosen; the test split (scenes from another seed) is where verdicts are reported, and nothing is chosen on it
(docs/toyworld.md). Every row of an evaluation carries its trial's split; a results folder from before splits
says its split in `split.json`."""

from __future__ import annotations

import json
from pathlib import Path

from break_a_scene.errors import UserInputError

SPLITS = ("dev", "test")
SPLIT_FILE = "split.json"


def rows_split(out_dir: str | Path, rows: list[dict]) -> str:
    """The one split the rows come from (their `split` column, else the folder's split.json); several splits in
    one folder are refused: a table mixes no splits."""
    found = {row.get("split") for row in rows if row.get("split")}
    marker = Path(out_dir) / SPLIT_FILE
    if not found and marker.is_file():
        found = {json.loads(marker.read_text())["split"]}
    if len(found) > 1:
        raise UserInputError(f"the rows under '{out_dir}' come from the splits {', '.join(sorted(found))}; aggregate "
                             f"each split's trials alone (evaluation.out_dir per split).")
    return found.pop() if found else "unlabelled"


def split_line(split: str, rows: list[dict]) -> str:
    """The line every table starts with: the split and how many (scene, seed) units it holds."""
    units = {(row["scene"], str(row["train_seed"])) for row in rows}
    scenes = {row["scene"] for row in rows}
    return f"Split: {split} ({len(scenes)} scenes, {len(units)} (scene, training seed) units)"
