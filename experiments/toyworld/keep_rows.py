"""Copy the finished trials' rows.csv and summary.json (no pipelines, no images) from an evaluation's out_dir
into a folder that is committed, so a sweep too long for one sitting keeps its results and resumes: copied back
into the out_dir, a finished trial's rows are not trained or sampled again. A trial counts as finished once its
summary.json is written; an unfinished one is left out (its rows would mix two trainings if it resumed
without its pipeline).

    python experiments/toyworld/keep_rows.py outputs/evaluation_toyworld_ablations \
        experiments/toyworld/results/toyworld_ablations
    cp -r experiments/toyworld/results/toyworld_ablations/. outputs/evaluation_toyworld_ablations/  # to resume
"""

import argparse
import shutil
from pathlib import Path

from break_a_scene.evaluation.rows import ROWS_FILE
from break_a_scene.evaluation.runner import SUMMARY_FILE


def keep_rows(out_dir: Path, dest: Path) -> int:
    """Returns the number of finished trials copied."""
    kept = 0
    for summary in sorted(out_dir.rglob(SUMMARY_FILE)):
        trial = summary.parent
        target = dest / trial.relative_to(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name in (ROWS_FILE, SUMMARY_FILE):
            shutil.copy2(trial / name, target / name)
        kept += 1
    return kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path, help="an evaluation's out_dir (<method>/<scene>/seed_<seed>/)")
    parser.add_argument("dest", type=Path, help="where the rows are kept (same layout)")
    args = parser.parse_args()
    if not args.out_dir.is_dir():
        parser.error(f"{args.out_dir} is not a folder")
    print(f"{keep_rows(args.out_dir, args.dest)} finished trials kept in {args.dest}")


if __name__ == "__main__":
    main()
