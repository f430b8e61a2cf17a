"""The COCO builder on a small synthetic COCO-format file made here, and the toy scene set."""

import json

import numpy as np
import pytest
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.benchmark_sets import build_coco_set, build_toy_set, read_index, scene_folder

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "zebra"}, {"id": 4, "name": "cup"}]


def _box(ann_id, image_id, cat, x, y, w, h, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "iscrowd": crowd, "area": w * h,
            "bbox": [x, y, w, h], "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def _coco(tmp_path):
    """Images 120x100 (crop: the centre 100x100, x from 10): 1 qualifies (cat + dog, and a small cup);
    2 has a zebra; 3 has one class only; 4 qualifies (two cats: the larger kept, + cup); 5: the dog is a crowd."""
    images, anns = [], []
    for image_id in range(1, 6):
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 120, "height": 100})
        picture = Image.fromarray(np.full((100, 120, 3), 40 * image_id, np.uint8))
        picture.save(tmp_path / "images" / images[-1]["file_name"])
    anns += [_box(1, 1, 1, 10, 0, 50, 50), _box(2, 1, 2, 60, 50, 45, 45), _box(3, 1, 4, 70, 0, 10, 10)]
    anns += [_box(4, 2, 1, 10, 0, 50, 50), _box(5, 2, 3, 60, 50, 45, 45)]
    anns += [_box(6, 3, 1, 10, 0, 50, 50), _box(7, 3, 1, 60, 50, 45, 45)]
    anns += [_box(8, 4, 1, 10, 0, 40, 40), _box(9, 4, 1, 50, 0, 50, 50), _box(10, 4, 4, 20, 60, 80, 30)]
    anns += [_box(11, 5, 1, 10, 0, 50, 50), _box(12, 5, 2, 60, 50, 45, 45, crowd=1)]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


@pytest.fixture
def coco(tmp_path):
    (tmp_path / "images").mkdir()
    return _coco(tmp_path), tmp_path / "images"


def test_coco_protocol_and_files(coco, tmp_path):
    annotations, images = coco
    out = build_coco_set(annotations, images, tmp_path / "set", count=2, seed=0, size=64)
    scenes = read_index(out)
    assert [s["coco_image_id"] for s in scenes] == [1, 4]
    assert scenes[0]["classes"] == ["cat", "dog"]  # the 1% cup is dropped
    assert scenes[1]["classes"] == ["cat", "cup"]  # the larger cat (25%, the 16% one dropped), then the cup (24%)
    assert scenes[1]["shares"] == sorted(scenes[1]["shares"], reverse=True)
    folder = tmp_path / "set" / "scene_000"
    assert (folder / "classes.txt").read_text() == "cat\ndog\n"
    assert Image.open(folder / "img.png").size == (64, 64)
    mask = np.asarray(Image.open(folder / "mask0.png")) > 127
    assert mask[:32, :32].mean() > 0.95 and mask[40:, 40:].mean() < 0.05  # the cat's box, top-left of the crop
    assert scene_folder(out, 1) == str(out / "scene_001")
    assert json.loads((out / "index.json").read_text())["protocol"]["qualifying"] == 2


def test_coco_is_deterministic_and_checks_its_inputs(coco, tmp_path):
    annotations, images = coco
    a = read_index(build_coco_set(annotations, images, tmp_path / "a", count=1, seed=3, size=32))
    b = read_index(build_coco_set(annotations, images, tmp_path / "b", count=1, seed=3, size=32))
    assert a == b
    with pytest.raises(UserInputError, match="only 2 images .* qualify; asked for 5"):
        build_coco_set(annotations, images, tmp_path / "c", count=5)
    assert not (tmp_path / "c").exists()
    with pytest.raises(UserInputError, match="already exists"):
        build_coco_set(annotations, images, tmp_path / "a", count=1)
    with pytest.raises(UserInputError, match="not found"):
        build_coco_set(tmp_path / "nope.json", images, tmp_path / "d")
    with pytest.raises(UserInputError, match="out of range: .* has 1 scenes"):
        scene_folder(tmp_path / "a", 1)


def test_toy_set(tmp_path):
    out = build_toy_set(tmp_path / "toy", count=3, seed=0)
    scenes = read_index(out)
    assert [s["name"] for s in scenes] == ["scene_000", "scene_001", "scene_002"]
    assert [len(s["classes"]) for s in scenes] == [2, 3, 2]
    assert all((out / s["name"] / "scene.json").is_file() for s in scenes)


def test_toy_set_with_several_photos(tmp_path):
    out = build_toy_set(tmp_path / "toy", count=2, seed=0, photos=3)
    assert json.loads((out / "index.json").read_text())["protocol"]["photos"] == 3
    assert sorted(p.name for p in (out / "scene_001").iterdir() if p.is_dir()) == ["photo_0", "photo_1", "photo_2"]
    with pytest.raises(UserInputError, match="at least one photo"):
        build_toy_set(tmp_path / "none", count=2, photos=0)
    assert not (tmp_path / "none").exists()


def test_the_test_split_is_written_by_one_command(tmp_path):
    from break_a_scene.cli.benchmark import main
    from break_a_scene.evaluation.benchmark_sets import read_split

    main(["toyworld", "--count", "2", "--seed", "1", "--split", "test", "--out", str(tmp_path / "test")])
    main(["toyworld", "--count", "2", "--out", str(tmp_path / "dev")])
    assert read_split(tmp_path / "test") == "test" and read_split(tmp_path / "dev") == "dev"
    protocol = json.loads((tmp_path / "test" / "index.json").read_text())["protocol"]
    assert (protocol["seed"], protocol["count"], protocol["split"]) == (1, 2, "test")
    dev, test = ((tmp_path / name / "scene_000" / "img.png").read_bytes() for name in ("dev", "test"))
    assert dev != test  # another seed draws other scenes
