"""A trial's rows file: one row per generated image, the prompt and seeds first, then one column per metric."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from break_a_scene.errors import UserInputError
from break_a_scene.inputs import read_text

ROWS_FILE = "rows.csv"
META = {"method", "scene", "train_seed", "prompt", "class_prompt", "tokens", "concepts", "sample_seed", "image"}
OPTIONAL_META = {"split"}  # rows from before splits lack it


def read_rows_file(path: Path) -> list[dict]:
    """One trial's rows, checked: every row has every column, and the metric columns hold numbers (or
    nothing); a damaged file is named with its line and how to recover."""
    fix = ("the file is damaged; move it away and run the trial again (bas-evaluate writes the rows that are "
           "missing), or restore it")
    reader = csv.DictReader(io.StringIO(read_text(path, "rows file"), newline=""))
    missing = sorted(META - set(reader.fieldnames or []))
    if missing:
        raise UserInputError(f"'{path}' lacks the columns {', '.join(missing)}; {fix}.")
    rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise UserInputError(f"'{path}', line {line}, does not have one value per column; {fix}.")
        for key in ("train_seed", "sample_seed", "concepts"):
            if not row[key].lstrip("-").isdigit():
                raise UserInputError(f"'{path}', line {line}: {key}={row[key]!r} is not a whole number; {fix}.")
        for key in row.keys() - META - OPTIONAL_META:
            try:
                float(row[key] or "nan")
            except ValueError:
                raise UserInputError(f"'{path}', line {line}: {key}={row[key]!r} is not a number; {fix}.") from None
    return rows
