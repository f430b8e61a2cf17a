"""Toy scenes written in the folder layout the training code reads (img.png, mask0.png, ..., classes.txt),
plus a `scene.json` with the generator's ground truth."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from break_a_scene.toyworld.world import ToyScene, render, sample_scene


def write_scene_folder(scene: ToyScene, folder: str | Path, size: int = 32) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image, masks = render(scene, size)
    image.save(folder / "img.png")
    for index, mask in enumerate(masks):
        Image.fromarray((mask * 255).round().astype("uint8")).save(folder / f"mask{index}.png")
    (folder / "classes.txt").write_text("".join(f"{obj.name}\n" for obj in scene.objects))
    (folder / "scene.json").write_text(json.dumps(asdict(scene), indent=1))
    return folder


def read_scene_json(folder: str | Path) -> ToyScene:
    from break_a_scene.toyworld.world import ToyObject

    data = json.loads((Path(folder) / "scene.json").read_text())
    objects = tuple(ToyObject(**obj) for obj in data["objects"])
    return ToyScene(objects, data["background"], data["gradient"], tuple(tuple(j) for j in data["jitter"]))


def write_scene_set(root: str | Path, count: int, seed: int = 0, objects: tuple[int, ...] = (2, 3),
                    size: int = 32, textures: bool = False) -> list[Path]:
    """`count` scenes named scene_000.. with 2 or 3 objects each (alternating), deterministic for a seed."""
    rng = random.Random(seed)
    folders = []
    for index in range(count):
        scene = sample_scene(rng, num_objects=objects[index % len(objects)], textures=textures, jitter=False)
        folders.append(write_scene_folder(scene, Path(root) / f"scene_{index:03d}", size))
    return folders
