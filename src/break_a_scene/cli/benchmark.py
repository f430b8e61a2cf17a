"""`bas-benchmark`: build a benchmark scene set (scene folders + index.json).

    bas-benchmark coco --annotations coco/annotations/instances_val2017.json --images coco/val2017 \
        --out data/coco_scenes
    bas-benchmark toyworld --count 8 --out outputs/benchmarks/toyworld
    bas-benchmark toyworld --count 24 --seed 1 --split test --out outputs/benchmarks/toyworld_test24
    bas-benchmark toyworld --count 12 --photos 3 --out outputs/benchmarks/toyworld12_photos3
"""

from __future__ import annotations

import argparse
import sys

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.splits import SPLITS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bas-benchmark", description=__doc__.splitlines()[0])
    worlds = parser.add_subparsers(dest="world", required=True)
    coco = worlds.add_parser("coco", help="the paper's COCO protocol, from a local COCO download")
    coco.add_argument("--annotations", required=True, help="instances_*.json")
    coco.add_argument("--images", required=True, help="the folder of the annotation file's images")
    coco.add_argument("--out", required=True)
    coco.add_argument("--count", type=int, default=50)
    coco.add_argument("--seed", type=int, default=0)
    coco.add_argument("--size", type=int, default=512)
    coco.add_argument("--min-area", type=float, default=0.15)
    coco.add_argument("--max-concepts", type=int, default=4)
    toy = worlds.add_parser("toyworld", help="toy scenes with 2 and 3 objects")
    toy.add_argument("--out", required=True)
    toy.add_argument("--count", type=int, default=8)
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--split", default="dev", choices=SPLITS,
                     help="dev: settings and variants are chosen on it; test: verdicts are reported on it, and nothing "
                          "is chosen on it (docs/toyworld.md)")
    toy.add_argument("--photos", type=int, default=1,
                     help="photos per scene: photo 0 is the one-photo set's scene, the others show its objects "
                          "in other slots on other backgrounds")
    args = parser.parse_args(argv)
    from break_a_scene.evaluation.benchmark_sets import build_coco_set, build_toy_set, read_index

    try:
        if args.world == "coco":
            out = build_coco_set(args.annotations, args.images, args.out, args.count, args.seed, args.size,
                                 args.min_area, args.max_concepts)
        else:
            out = build_toy_set(args.out, args.count, args.seed, args.photos, args.split)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{len(read_index(out))} scenes in {out}")


if __name__ == "__main__":
    main()
