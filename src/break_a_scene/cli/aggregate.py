"""`bas-aggregate <evaluation folder>`: the comparison table, the figure and the per-concept-count tables
from every trial's rows (written to <folder>/aggregate/)."""

from __future__ import annotations

import argparse
import sys

from break_a_scene.errors import UserInputError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bas-aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="evaluation.out_dir of the sweep (holds <method>/<scene>/seed_<n>/rows.csv)")
    parser.add_argument("--x", default=None, help="metric on the x axis (default: the world's prompt metric)")
    parser.add_argument("--y", default=None, help="metric on the y axis (default: the world's identity metric)")
    parser.add_argument("--reference", default=None,
                        help="the method every other one is paired against in paired.md (default: break_a_scene)")
    args = parser.parse_args(argv)
    from break_a_scene.evaluation.aggregate import aggregate

    try:
        report = aggregate(args.folder, args.x, args.y, args.reference)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print((report / "table.md").read_text())
    print(f"written to {report}/ ({', '.join(sorted(path.name for path in report.iterdir()))})")


if __name__ == "__main__":
    main()
