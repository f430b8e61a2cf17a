"""Scene folders as annotation tools export them: a COCO file (masks encoded by pycocotools), a LabelMe file, a
label-map PNG and RGBA cut-outs, each read into the masks the tool meant, and malformed ones refused in one line
that names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from break_a_scene.annotations import rle_counts
from break_a_scene.errors import UserInputError
from break_a_scene.scene import Scene, ScenePhotos, load_scene, prepare_photos

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "annotations"


def test_coco_file_of_two_images_is_two_photos_with_a_shared_concept():
    scene = load_scene(str(FIXTURES / "coco"))
    assert isinstance(scene, ScenePhotos)
    assert scene.class_names == ["red box", "blue ball", "green leaf", "yellow kite"] and scene.num_concepts == 4
    first, second = scene.photos
    assert first.concepts == [0, 1] and second.concepts == [1, 2, 3]  # "blue ball" is one concept in both
    # each mask has the pixels pycocotools decodes from the same file: exactly for the RLEs (compressed and
    # plain) and the axis-aligned polygon, to a pixel an edge for the slanted triangle (277 there)
    truth = json.loads((FIXTURES / "coco_pycocotools_pixels.json").read_text())
    sums = [int(m.sum()) for m in first.masks + second.masks]
    assert sums[:4] == [truth["1"], truth["2"], truth["3"], truth["4"]] == [160, 197, 197, 160]
    assert abs(sums[4] - truth["5"]) <= 3
    assert first.masks[0][4:14, 4:20].all() and first.masks[0].sum() == 160  # the box, edges as pycocotools
    tensors = prepare_photos(scene, 32)
    assert [t.present.tolist() for t in tensors] == [[True, True, False, False], [False, True, True, True]]


def test_compressed_rle_counts_decode_as_cocos_own_encoder_wrote_them():
    data = json.loads((FIXTURES / "coco" / "instances_default.json").read_text())
    counts = rle_counts(data["annotations"][1]["segmentation"]["counts"])
    assert sum(counts) == 32 * 48 and sum(counts[1::2]) == 197
    assert rle_counts("0") == [0] and rle_counts("52") == [5, 2]  # single groups: '0' + n


def test_labelme_shapes_with_one_label_are_one_concept():
    scene = load_scene(str(FIXTURES / "labelme"))
    assert isinstance(scene, Scene) and scene.class_names == ["red box", "blue ball"]
    box, ball = scene.masks
    # the polygon (4,4)-(19,13) with its edges (16 x 10) and the 4 x 4 rectangle (4,20)-(7,23), as LabelMe draws
    assert box.sum() == 160 + 16 and box[4:14, 4:20].all() and box[20:24, 4:8].all()
    assert ball[16, 34] == 1 and ball[16, 42] == 1 and ball[16, 43] == 0 and ball[8, 26] == 0


def write_label_map(folder: Path, mode: str = "P", classes: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "labelme" / "photo.png", folder / "img.png")
    labels = np.zeros((32, 48), np.uint8)
    labels[4:14, 4:20] = 1
    labels[10:20, 30:40] = 2
    picture = Image.fromarray(labels, mode="L")
    if mode == "P":  # a palette PNG, as VOC's and most tools' label maps are
        picture = picture.convert("P")
        picture.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    elif mode == "RGB":
        picture = picture.convert("RGB")
    picture.save(folder / "labels.png")
    if classes:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


def test_a_palette_label_map_is_one_concept_per_value(tmp_path):
    scene = load_scene(str(write_label_map(tmp_path / "scene", classes=["red box", "green bag"])))
    assert scene.class_names == ["red box", "green bag"]
    assert [int(m.sum()) for m in scene.masks] == [160, 100] and scene.masks[1][10:20, 30:40].all()


def test_an_rgba_cut_out_mask_is_read_from_its_alpha(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    photo = Image.open(FIXTURES / "labelme" / "photo.png").convert("RGB")
    photo.save(folder / "img.png")
    alpha = np.zeros((32, 48), np.uint8)
    alpha[4:14, 4:20] = 255
    cut = np.dstack([np.asarray(photo) * (alpha[..., None] > 0), alpha])  # the object's pixels, clear elsewhere
    Image.fromarray(cut.astype(np.uint8), mode="RGBA").save(folder / "mask0.png")
    scene = load_scene(str(folder))
    assert scene.masks[0].sum() == 160 and scene.masks[0][4:14, 4:20].all()


def edited_copy(tmp_path: Path, name: str, json_name: str, change) -> Path:
    """A copy of fixture folder `name` with its JSON file changed by `change(data)`."""
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    data = json.loads((folder / json_name).read_text())
    change(data)
    (folder / json_name).write_text(json.dumps(data))
    return folder


def coco_with(tmp_path: Path, change) -> Path:
    return edited_copy(tmp_path, "coco", "instances_default.json", change)


def labelme_with(tmp_path: Path, change) -> Path:
    return edited_copy(tmp_path, "labelme", "photo.json", change)


MALFORMED = {
    "coco_unknown_category": (lambda p: coco_with(p, lambda d: d["annotations"][0].update(category_id=9)),
                              "category_id 9"),
    "coco_two_point_polygon": (lambda p: coco_with(p, lambda d: d["annotations"][0].update(
        segmentation=[[1, 1, 5, 5]])), "a polygon of 2 points"),
    "coco_short_rle": (lambda p: coco_with(p, lambda d: d["annotations"][3]["segmentation"].update(counts=[3, 4])),
                       "RLE covers 7 pixels"),
    "coco_box_only": (lambda p: coco_with(p, lambda d: d["annotations"][0].update(segmentation=[])),
                      "no segmentation"),
    "coco_wrong_size": (lambda p: coco_with(p, lambda d: d["images"][0].update(width=50)),
                        "draws on 50x32 but image"),
    "labelme_line": (lambda p: labelme_with(p, lambda d: d["shapes"][0].update(shape_type="line")),
                     "polygon, rectangle, circle"),
    "labelme_no_label": (lambda p: labelme_with(p, lambda d: d["shapes"][1].update(label="")), "shape 1 has no label"),
    "labelme_text_points": (lambda p: labelme_with(p, lambda d: d["shapes"][0].update(points="abc")),
                            "malformed points"),
    "labelme_missing_image": (lambda p: labelme_with(p, lambda d: d.update(imagePath="other.jpg")),
                              "names image 'other.jpg'"),
    "label_map_rgb": (lambda p: write_label_map(p / "s", mode="RGB"), "one channel"),
    "label_map_unnamed_value": (lambda p: write_label_map(p / "s", classes=["red box"]), "values [2]"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotations_are_one_line_naming_the_file(tmp_path, case):
    make, expected = MALFORMED[case]
    folder = make(tmp_path)
    with pytest.raises(UserInputError) as caught:
        load_scene(str(folder))
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert str(folder) in message


def test_two_json_files_are_refused_naming_both(tmp_path):
    folder = labelme_with(tmp_path, lambda d: None)
    (folder / "notes.json").write_text("{}")
    with pytest.raises(UserInputError, match="notes.json, photo.json"):
        load_scene(str(folder))
