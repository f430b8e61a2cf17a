"""Benchmark scene sets: folders in the training layout (img.png, mask0.png, ..., classes.txt) plus an
`index.json` listing them, so a sweep can address scene i of a set (`benchmark.root`, `benchmark.scene_index`;
the trial folder is named with `${bas.scene_name:...}`).

- `build_coco_set`: the paper's COCO protocol (method.md): square centre crop; segments (not crowd) of at
  least 15% of the crop; at most one segment per class (the largest); images with >= 2 such classes and
  none of the six excluded classes among them; a seeded choice of `count` images among all that qualify
  (sorted by COCO id first, so the same COCO gives the same set). Kept concepts are capped at
  `max_concepts` (largest first; the paper notes the method is best with <= 4).
- `build_toy_set`: the toy world's scenes (2 and 3 objects), deterministic for a seed; with `photos` > 1,
  several photos of each scene (the same objects in other slots, on other backgrounds).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.scene import CLASSES_FILE, read_classes_file

INDEX_FILE = "index.json"
EXCLUDED_CLASSES = ("orange", "banana", "broccoli", "carrot", "zebra", "giraffe")


def read_index(root: str | Path) -> list[dict]:
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise UserInputError(f"'{path}' not found: build the scene set first (bas-benchmark coco|toyworld).")
    return json.loads(path.read_text())["scenes"]


def read_split(root: str | Path) -> str:
    """The split a scene set was built as (`bas-benchmark ... --split`); sets from before splits were the dev
    scenes."""
    return json.loads((Path(root) / INDEX_FILE).read_text()).get("protocol", {}).get("split", "dev")


def scene_folder(root: str | Path, index: int) -> str:
    """Folder of scene `index` of a scene set."""
    scenes = read_index(root)
    if not 0 <= int(index) < len(scenes):
        raise UserInputError(f"scene index {index} is out of range: '{root}' has {len(scenes)} scenes.")
    return str(Path(root) / scenes[int(index)]["name"])


def library_folders(root: str | Path, index: int, pictures: int) -> list[str]:
    """The scenes a concept-library trial learns together: `pictures` consecutive scenes of the set, trial
    `index` taking scenes index*pictures ... index*pictures + pictures - 1."""
    if int(pictures) < 2:
        raise UserInputError(f"benchmark.pictures={pictures}: a library trial learns 2 pictures or more.")
    count = len(read_index(root))
    if not 0 <= int(index) < count // int(pictures):
        raise UserInputError(f"benchmark.scene_index={index} is out of range: '{root}' has {count} scenes, "
                             f"{count // int(pictures)} libraries of {pictures} (benchmark.pictures).")
    first = int(index) * int(pictures)
    return [scene_folder(root, first + i) for i in range(int(pictures))]


def _scene_name(root: str | None, index: int, folder: str, pictures: int = 1) -> str:
    """Scene `index` of the scene set at `root` (its index.json), the library's scenes joined by "+" when a
    trial learns several, or the folder's name when there is no set."""
    if not root:
        return Path(folder).name
    if int(pictures) > 1:
        return "+".join(Path(f).name for f in library_folders(root, index, pictures))
    return Path(scene_folder(root, index)).name


def register_resolvers() -> None:
    """`${bas.scene_name:root,index,folder,pictures}`, which names an evaluation trial's folder
    (conf/evaluate.yaml)."""
    if not OmegaConf.has_resolver("bas.scene_name"):
        OmegaConf.register_new_resolver("bas.scene_name", _scene_name)


def _write_atomically(out: Path, fill) -> Path:
    """Build the set in a temporary sibling folder, then move it into place: no half-written set is left."""
    if out.exists():
        raise UserInputError(f"'{out}' already exists; remove it or choose another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(staging)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _square_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def coco_candidates(coco, min_area: float = 0.15, excluded: tuple[str, ...] = EXCLUDED_CLASSES,
                    max_concepts: int = 4) -> list[dict]:
    """Every qualifying image, sorted by id: {"image_id", "annotations" (ids, largest first), "classes"}."""
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    found = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        left, top, right, bottom = _square_crop_box(info["width"], info["height"])
        side_area = float((right - left) * (bottom - top))
        best: dict[int, tuple[float, int]] = {}
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False)):
            share = coco.annToMask(ann)[top:bottom, left:right].sum() / side_area
            if share >= min_area and share > best.get(ann["category_id"], (0.0, -1))[0]:
                best[ann["category_id"]] = (float(share), ann["id"])
        if len(best) < 2 or any(names[c] in excluded for c in best):
            continue
        kept = sorted(best.items(), key=lambda item: -item[1][0])[:max_concepts]
        found.append({"image_id": image_id, "annotations": [a for _, (_, a) in kept],
                      "classes": [names[c] for c, _ in kept], "shares": [round(s, 4) for _, (s, _) in kept]})
    return found


def build_coco_set(annotations: str | Path, images: str | Path, out: str | Path, count: int = 50, seed: int = 0,
                   size: int = 512, min_area: float = 0.15, max_concepts: int = 4) -> Path:
    from pycocotools.coco import COCO

    annotations, images, out = Path(annotations), Path(images), Path(out)
    if not annotations.is_file():
        raise UserInputError(f"COCO annotations '{annotations}' not found (e.g. annotations/instances_val2017.json).")
    if not images.is_dir():
        raise UserInputError(f"COCO image folder '{images}' not found (e.g. val2017/).")
    coco = COCO(str(annotations))
    candidates = coco_candidates(coco, min_area, max_concepts=max_concepts)
    if len(candidates) < count:
        raise UserInputError(f"only {len(candidates)} images of '{annotations}' qualify; asked for {count}.")
    chosen = sorted(random.Random(seed).sample(candidates, count), key=lambda c: c["image_id"])
    for candidate in chosen:
        path = images / coco.loadImgs(candidate["image_id"])[0]["file_name"]
        if not path.is_file():
            raise UserInputError(f"COCO image '{path}' is missing from '{images}'.")

    def fill(staging: Path) -> None:
        entries = []
        for number, candidate in enumerate(chosen):
            info = coco.loadImgs(candidate["image_id"])[0]
            box = _square_crop_box(info["width"], info["height"])
            folder = staging / f"scene_{number:03d}"
            folder.mkdir()
            picture = Image.open(images / info["file_name"]).convert("RGB").crop(box)
            picture.resize((size, size), Image.Resampling.BICUBIC).save(folder / "img.png")
            for j, ann_id in enumerate(candidate["annotations"]):
                mask = coco.annToMask(coco.loadAnns(ann_id)[0])[box[1]:box[3], box[0]:box[2]]
                Image.fromarray((mask * 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST).save(
                    folder / f"mask{j}.png")
            (folder / "classes.txt").write_text("".join(f"{c}\n" for c in candidate["classes"]))
            entries.append({"name": folder.name, "coco_image_id": candidate["image_id"],
                            "file_name": info["file_name"], "classes": candidate["classes"],
                            "shares": candidate["shares"]})
        protocol = {"source": str(annotations), "seed": seed, "count": count, "size": size, "min_area": min_area,
                    "max_concepts": max_concepts, "excluded": list(EXCLUDED_CLASSES), "qualifying": len(candidates)}
        (staging / INDEX_FILE).write_text(json.dumps({"protocol": protocol, "scenes": entries}, indent=1))

    return _write_atomically(out, fill)


def build_toy_set(out: str | Path, count: int = 8, seed: int = 0, photos: int = 1, split: str = "dev") -> Path:
    from break_a_scene.toyworld.scenes import write_scene_set

    if photos < 1:
        raise UserInputError(f"--photos {photos}: a scene needs at least one photo.")

    def fill(staging: Path) -> None:
        folders = write_scene_set(staging, count, seed=seed, photos=photos)
        entries = [{"name": f.name, "classes": read_classes_file(f / CLASSES_FILE)} for f in folders]
        protocol = {"source": "toyworld", "seed": seed, "count": count, "photos": photos, "split": split}
        (staging / INDEX_FILE).write_text(json.dumps({"protocol": protocol, "scenes": entries}, indent=1))

    return _write_atomically(Path(out), fill)
