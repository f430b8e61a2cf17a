"""What the extra objects are: in the images of a toy evaluation where the judge sees more objects than the
prompt asks for, the share of the stray objects (each object that is not a prompted concept in its prompted
slot) of each kind: a prompted concept again in the slot it was trained in, a prompted concept elsewhere, a
concept of the scene that the prompt leaves out, or some other object (a mixed or unknown one). Reads only the
rows' stray_* columns, so committed rows are enough.

    python experiments/toyworld/extras.py outputs/evaluation_toyworld_ablations
"""

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from break_a_scene.evaluation.aggregate import load_rows
from break_a_scene.toyworld.benchmark import STRAY_KINDS


def stray_shares(rows: list[dict]) -> dict[str, tuple[int, dict[str, float]]]:
    """Per method: the number of images with extra objects and the share of each stray kind in them."""
    counts: dict[str, Counter] = defaultdict(Counter)
    images: Counter = Counter()
    for row in rows:
        if float(row["extra_objects"]) == 1.0:
            images[row["method"]] += 1
            counts[row["method"]].update({kind: float(row[kind]) for kind in STRAY_KINDS})
    return {method: (images[method], {k: c[k] / max(sum(c.values()), 1) for k in STRAY_KINDS})
            for method, c in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path, help="a toy evaluation's out_dir (<method>/<scene>/<seed>/rows.csv)")
    args = parser.parse_args()
    print(f"| method | images with extra objects | {' | '.join(STRAY_KINDS)} |")
    print("|---|---|" + "---|" * len(STRAY_KINDS))
    for method, (images, shares) in stray_shares(load_rows(args.out_dir)).items():
        print(f"| {method} | {images} | {' | '.join(f'{shares[k]:.2f}' for k in STRAY_KINDS)} |")


if __name__ == "__main__":
    main()
