import numpy as np
import pytest
import torch
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.scene import load_scene, prepare_scene
from tests.conftest import write_scene


def test_folder_layout_with_classes(scene_dir):
    scene = load_scene(folder=str(scene_dir))
    assert scene.num_concepts == 2
    assert scene.class_names == ["red box", "blue box"]
    assert scene.image.mode == "RGB" and scene.image.size == (96, 64)
    assert scene.masks[0].dtype == np.float32 and scene.masks[0].max() == 1.0
    assert scene.masks[0][8, 10] == pytest.approx(128 / 255)  # soft edges survive loading


def test_explicit_paths_and_rgba_masks(tmp_path, scene_dir):
    mask = np.asarray(Image.open(scene_dir / "mask1.png"))
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[..., 3] = mask
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    masks = [str(scene_dir / "mask0.png"), str(tmp_path / "alpha.png")]
    scene = load_scene(image=str(scene_dir / "img.jpg"), masks=masks)
    assert scene.class_names is None
    assert np.array_equal(scene.masks[1], mask.astype(np.float32) / 255)


def test_prepare_crops_image_and_masks_together(scene_dir):
    scene = load_scene(folder=str(scene_dir))
    tensors = prepare_scene(scene, 32)
    assert tensors.image.shape == (3, 32, 32) and tensors.masks.shape == (2, 32, 32)
    assert -1.0 <= tensors.image.min() and tensors.image.max() <= 1.0
    # 96x64 -> centre 64x64 crop starts at x=16; box 0 spans x 8..40 -> 0..24 -> 0..12 at 32 px
    assert tensors.masks[0, 10, 2] > 0.9 and tensors.masks[0, 10, 20] < 0.1
    red = tensors.image[:, tensors.masks[0] > 0.9].mean(dim=1)
    assert red[0] > 0.5 and red[2] < -0.5  # the masked pixels are the red box


def test_background_is_complement_of_union(scene_dir):
    tensors = prepare_scene(load_scene(folder=str(scene_dir)), 32, background=True)
    assert tensors.masks.shape[0] == 3
    torch.testing.assert_close(tensors.masks[2], 1 - tensors.masks[:2].amax(dim=0))


def test_missing_image(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_scene(image=str(tmp_path / "nope.jpg"), masks=[str(tmp_path / "m.png")])


def test_missing_mask(scene_dir):
    with pytest.raises(UserInputError, match=r"mask .*gone\.png' does not exist"):
        load_scene(image=str(scene_dir / "img.jpg"), masks=[str(scene_dir / "gone.png")])


def test_folder_without_masks(tmp_path, scene_dir):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "img.jpg").write_bytes((scene_dir / "img.jpg").read_bytes())
    with pytest.raises(UserInputError, match="has no masks"):
        load_scene(folder=str(tmp_path / "bare"))


def test_mask_size_differs(scene_dir):
    Image.new("L", (10, 10), 255).save(scene_dir / "mask1.png")
    with pytest.raises(UserInputError, match=r"mask1\.png' is 10x10 but image .* is 96x64"):
        load_scene(folder=str(scene_dir))


def test_empty_mask(scene_dir):
    Image.new("L", (96, 64), 0).save(scene_dir / "mask0.png")
    with pytest.raises(UserInputError, match=r"mask0\.png' is empty"):
        load_scene(folder=str(scene_dir))


def test_full_mask(scene_dir):
    Image.new("L", (96, 64), 255).save(scene_dir / "mask1.png")
    with pytest.raises(UserInputError, match=r"mask1\.png' covers the whole image"):
        load_scene(folder=str(scene_dir))


def test_mask_emptied_by_center_crop(tmp_path):
    folder = write_scene(tmp_path / "s", boxes=((0, 10, 10, 30), (40, 10, 60, 30)))
    scene = load_scene(folder=str(folder))
    with pytest.raises(UserInputError, match="empty after center-cropping"):
        prepare_scene(scene, 32)


def test_class_count_must_match(scene_dir):
    (scene_dir / "classes.txt").write_text("only one\n")
    with pytest.raises(UserInputError, match="1 class names for 2 masks"):
        load_scene(folder=str(scene_dir))
