"""Toy scenes written in the folder layout the training code reads (img.png, mask0.png, ..., classes.txt),
plus a `scene.json` with the generator's ground truth; or as several photos of one scene (photo_0/, photo_1/,
..., each img.png + masks, with classes.txt and photo 0's scene.json at the top)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path

from PIL import Image

from break_a_scene.inputs import read_json
from break_a_scene.toyworld.world import BACKGROUNDS, SLOTS, ToyScene, render, sample_scene


def _write_picture(scene: ToyScene, folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image, masks = render(scene, size)
    image.save(folder / "img.png")
    for index, mask in enumerate(masks):
        Image.fromarray((mask * 255).round().astype("uint8")).save(folder / f"mask{index}.png")


def write_scene_folder(scene: ToyScene, folder: str | Path, size: int = 32, photos: int = 1,
                       rng: random.Random | None = None) -> Path:
    """The scene in the training layout; with `photos` > 1, photo 0 is the scene and every other photo
    shows the same objects (mask i = object i) in other slots, on another background (`other_photos`)."""
    folder = Path(folder)
    if photos == 1:
        _write_picture(scene, folder, size)
    else:
        views = [scene, *other_photos(scene, photos - 1, rng or random.Random(0))]
        for number, view in enumerate(views):
            _write_picture(view, folder / f"photo_{number}", size)
    (folder / "classes.txt").write_text("".join(f"{obj.name}\n" for obj in scene.objects))
    (folder / "scene.json").write_text(json.dumps(asdict(scene), indent=1))
    return folder


def other_photos(scene: ToyScene, count: int, rng: random.Random) -> list[ToyScene]:
    """`count` more photos of the scene's objects: each photo on a background none of the others has, and each
    object, where the slots allow, in a slot it has in no earlier photo (3 photos of 3 objects: every object
    in every slot)."""
    backgrounds = rng.sample([b for b in BACKGROUNDS if b != scene.background], count)
    seen = [{obj.slot} for obj in scene.objects]
    views = []
    for background in backgrounds:
        options = []
        for _ in range(200):  # rejection: fresh slots for every object where any exist
            slots = rng.sample(SLOTS, len(scene.objects))
            options.append(slots)
            if all(slot not in used for slot, used in zip(slots, seen)):
                break
        slots = max(options, key=lambda s: sum(slot not in used for slot, used in zip(s, seen)))
        for slot, used in zip(slots, seen):
            used.add(slot)
        objects = tuple(replace(obj, slot=slot) for obj, slot in zip(scene.objects, slots))
        views.append(replace(scene, objects=objects, background=background))
    return views


def read_scene_json(folder: str | Path) -> ToyScene:
    from break_a_scene.toyworld.world import ToyObject

    data = read_json(Path(folder) / "scene.json", "toy scene description")
    objects = tuple(ToyObject(**obj) for obj in data["objects"])
    return ToyScene(objects, data["background"], data["gradient"], tuple(tuple(j) for j in data["jitter"]))


def write_scene_set(root: str | Path, count: int, seed: int = 0, objects: tuple[int, ...] = (2, 3),
                    size: int = 32, textures: bool = False, photos: int = 1) -> list[Path]:
    """`count` scenes named scene_000.. with 2 or 3 objects each (alternating), deterministic for a seed. With
    `photos` > 1 each scene has that many photos; photo 0 is the one-photo set's scene of the same seed, so
    the two sets pair scene by scene."""
    rng = random.Random(seed)
    folders = []
    for index in range(count):
        scene = sample_scene(rng, num_objects=objects[index % len(objects)], textures=textures, jitter=False)
        views = random.Random(f"photos-{seed}-{index}")  # its own stream: the scenes stay those of `seed`
        folders.append(write_scene_folder(scene, Path(root) / f"scene_{index:03d}", size, photos, views))
    return folders
