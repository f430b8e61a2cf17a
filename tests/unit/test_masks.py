"""Masks from words: instance policies, overlaps, the preview and the scene folder, with hand-made detections
(a detector and a segmenter are any callables with the real ones' signatures); the real models are run in
tests/integration/test_masks_cli.py."""

import numpy as np
import pytest
import torch
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.figures import MASK_COLOURS
from break_a_scene.masks import (
    Detections,
    FoundMask,
    check_scene_target,
    masks_from_words,
    overlaps,
    preview,
    write_scene,
)
from break_a_scene.scene import load_scene

H, W = 40, 60


class BoxDetector:
    """Fixed boxes per class name, best first."""

    threshold = 0.1

    def __init__(self, found: dict[str, list[tuple[list[float], float]]]):
        self.found = found

    def __call__(self, image, class_names):
        out = []
        for name in class_names:
            pairs = self.found.get(name, [])
            out.append(Detections(torch.tensor([b for b, _ in pairs], dtype=torch.float32).reshape(-1, 4),
                                  torch.tensor([s for _, s in pairs], dtype=torch.float32)))
        return out


def box_masks(image, boxes):
    """Each box filled: a segmenter that follows its prompt exactly."""
    masks = torch.zeros(len(boxes), image.height, image.width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = True
    return masks


IMAGE = Image.new("RGB", (W, H), (100, 100, 100))
# "cup": a small box with the best score, and a larger one; "spoon": one box
DETECTOR = BoxDetector({"cup": [([0, 0, 10, 10], 0.9), ([20, 0, 40, 20], 0.5)], "spoon": [([40, 30, 60, 40], 0.3)]})


@pytest.mark.parametrize("policy, area, score, boxes", [
    ("best", 100, 0.9, [[0, 0, 10, 10]]),
    ("largest", 400, 0.5, [[20, 0, 40, 20]]),
    ("all", 500, 0.9, [[0, 0, 10, 10], [20, 0, 40, 20]]),
])
def test_instance_policies(policy, area, score, boxes):
    cup, spoon = masks_from_words(IMAGE, ["cup", "spoon"], DETECTOR, box_masks, policy)
    assert (cup.class_name, int(cup.mask.sum()), cup.boxes) == ("cup", area, boxes)
    assert cup.score == pytest.approx(score)
    assert int(spoon.mask.sum()) == 200 and spoon.mask[30:40, 40:60].all()


def test_classes_not_found_are_named_in_one_line():
    with pytest.raises(UserInputError) as err:
        masks_from_words(IMAGE, ["cup", "fork", "knife"], DETECTOR, box_masks, source="'img.jpg'")
    message = str(err.value)
    assert message.startswith("'fork', 'knife' not found in 'img.jpg' at masks.detector.threshold=0.1")
    assert "\n" not in message and "cup" not in message


def test_unknown_policy_and_empty_mask_refused():
    with pytest.raises(UserInputError, match="masks.instances='biggest' is not one of best, largest, all"):
        masks_from_words(IMAGE, ["cup"], DETECTOR, box_masks, "biggest")
    flat = BoxDetector({"cup": [([5, 5, 5, 9], 0.9)]})  # zero width: the segmenter returns nothing
    with pytest.raises(UserInputError, match="'cup' was boxed .* empty mask"):
        masks_from_words(IMAGE, ["cup"], flat, box_masks)


def _found(name, y0, y1, x0, x1, score=0.5):
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return FoundMask(name, mask, score, [[x0, y0, x1, y1]])


def test_overlaps_are_the_shared_share_of_the_smaller_mask():
    a = _found("plate", 0, 10, 0, 10)  # 100 pixels
    b = _found("cup", 8, 13, 0, 10)  # 50 pixels, 20 of them on the plate
    c = _found("spoon", 30, 40, 50, 60)
    assert overlaps([a, b, c]) == [("plate", "cup", 0.4)]
    assert overlaps([a, b], at_least=0.5) == []


def test_preview_outlines_each_mask_in_its_colour():
    a, b = _found("cup", 20, 40, 0, 20), _found("spoon", 20, 40, 40, 60)
    picture = np.asarray(preview(IMAGE, [a, b]))
    scale = -(-256 // W)  # enlarged for reading
    assert picture.shape == (H * scale, W * scale, 3)
    colours = {tuple(c) for c in picture.reshape(-1, 3).tolist()}
    assert {MASK_COLOURS[0], MASK_COLOURS[1]} <= colours
    assert picture[39 * scale, 30 * scale].tolist() == [100, 100, 100]  # between the masks, untouched


def _photo(tmp_path, name="photo.jpg"):
    path = tmp_path / name
    IMAGE.save(path)
    return path


def test_scene_written_in_the_released_layout(tmp_path):
    photo = _photo(tmp_path)
    out = tmp_path / "scene"
    found = [_found("cup", 0, 10, 0, 10), _found("spoon", 30, 40, 50, 60)]
    write_scene(out, photo, IMAGE, found, {"instances": "best"})
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt", "img.jpg", "mask0.png", "mask1.png", "masks.json",
                                                     "preview.png"]
    assert (out / "img.jpg").read_bytes() == photo.read_bytes()  # copied, not re-encoded
    scene = load_scene(folder=str(out))
    assert scene.class_names == ["cup", "spoon"]
    assert [int((m > 0.5).sum()) for m in scene.masks] == [100, 100]


def test_png_photo_stays_lossless_and_a_bad_mask_leaves_nothing(tmp_path):
    photo = _photo(tmp_path, "photo.png")
    out = tmp_path / "scene"
    write_scene(out, photo, IMAGE, [_found("cup", 0, 10, 0, 10)], {})
    assert np.array_equal(np.asarray(Image.open(out / "img.png")), np.asarray(IMAGE))
    fresh = tmp_path / "fresh"
    with pytest.raises(UserInputError, match="covers the whole image"):
        write_scene(fresh, photo, IMAGE, [_found("table", 0, H, 0, W)], {})
    assert list(fresh.iterdir()) == []  # the trainer's own check ran before anything was moved in


def test_target_folder_checked_before_any_model_loads(tmp_path):
    photo = _photo(tmp_path)
    out = tmp_path / "scene"
    write_scene(out, photo, IMAGE, [_found("cup", 0, 10, 0, 10), _found("spoon", 30, 40, 50, 60)], {})
    with pytest.raises(UserInputError, match="already holds mask0.png, mask1.png, preview.png, masks.json, img.jpg"):
        check_scene_target(out, photo, ["cup", "spoon"], overwrite=False)
    check_scene_target(out, photo, ["cup", "spoon"], overwrite=True)
    with pytest.raises(UserInputError, match="holds mask1.png, which a scene of 1 classes would read as more"):
        check_scene_target(out, photo, ["cup"], overwrite=True)
    # the photo already in the folder, with its classes.txt: nothing would be replaced
    own = tmp_path / "own"
    own.mkdir()
    IMAGE.save(own / "img.jpg")
    (own / "classes.txt").write_text("cup\nspoon\n")
    check_scene_target(own, own / "img.jpg", ["cup", "spoon"], overwrite=False)
    with pytest.raises(UserInputError, match="already holds classes.txt"):
        check_scene_target(own, own / "img.jpg", ["cup", "fork"], overwrite=False)


def test_an_auto_masks_config_loaded_elsewhere_is_pointed_at_the_run(tmp_path):
    """The photo folder of an auto_masks run has no masks; its config, loaded by a notebook, says where they are."""
    folder = tmp_path / "photo"
    folder.mkdir()
    IMAGE.save(folder / "img.jpg")
    with pytest.raises(UserInputError, match="auto_masks=true, so its masks are in the run's scene/ folder"):
        load_scene(folder=str(folder), auto_masks=True)
    with pytest.raises(UserInputError, match="has no masks: add mask0.png") as err:
        load_scene(folder=str(folder))
    assert "run's scene/ folder" not in str(err.value)
