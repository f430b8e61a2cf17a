import numpy as np
import pytest
import torch
from PIL import Image

from break_a_scene.errors import UserInputError
from break_a_scene.scene import ScenePhotos, SceneTensors, load_scene, prepare_photos, prepare_scene, scene_warnings
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
    with pytest.raises(UserInputError, match=r"mask0\.png' keeps 0% of its concept after the square crop "
                                             r"\(96x64 -> the centre 64x64\); crop or pad the image"):
        prepare_scene(scene, 32)


def test_mask_mostly_cut_by_center_crop_warns(tmp_path, caplog):
    folder = write_scene(tmp_path / "s", boxes=((8, 10, 24, 30), (40, 10, 60, 30)))  # crop keeps x 16..80
    with caplog.at_level("WARNING"):
        prepare_scene(load_scene(folder=str(folder)), 32)
    assert "mask0.png' keeps 50% of its concept" not in caplog.text  # exactly half is kept: no warning
    folder = write_scene(tmp_path / "t", boxes=((8, 10, 22, 30), (40, 10, 60, 30)))
    with caplog.at_level("WARNING"):
        prepare_scene(load_scene(folder=str(folder)), 32)
    assert "mask0.png' keeps 43% of its concept" in caplog.text


def _upright_and_rotated(tmp_path):
    """A portrait photo stored landscape with EXIF orientation 6 (rotate 90 degrees clockwise to view), and
    masks drawn on the upright view: the concept at the top of the upright image."""
    upright = np.zeros((80, 40, 3), dtype=np.uint8)
    upright[5:25, 10:30] = (250, 20, 20)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 80 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = tmp_path / "phone"
    folder.mkdir()
    stored.save(folder / "img.jpg", exif=exif.tobytes(), quality=95)
    mask = np.zeros((80, 40), dtype=np.uint8)
    mask[5:25, 10:30] = 255
    Image.fromarray(mask).save(folder / "mask0.png")
    return folder


def test_exif_orientation_is_applied_before_the_masks_are_checked(tmp_path):
    scene = load_scene(folder=str(_upright_and_rotated(tmp_path)))
    assert scene.image.size == (40, 80)
    red = np.asarray(scene.image)[..., 0] > 128
    assert red[5:25, 10:30].mean() > 0.95 and red[40:].mean() == 0  # the concept is under its mask


@pytest.mark.parametrize("form", ["L", "1", "RGB", "RGBA_opaque", "RGBA_cutout", "LA_cutout", "P", "I16"])
def test_mask_forms_read_as_their_files_carry_them(tmp_path, form):
    shape = np.zeros((64, 96), dtype=np.uint8)
    shape[10:40, 20:50] = 255
    folder = write_scene(tmp_path / "s", boxes=((20, 10, 50, 40),))
    if form in ("L", "1", "RGB", "P"):
        image = Image.fromarray(shape).convert(form)
    elif form == "RGBA_opaque":  # the released code's example masks: the shape in the colour, alpha 255
        image = Image.fromarray(np.dstack([shape, shape, shape, np.full_like(shape, 255)]), "RGBA")
    elif form == "RGBA_cutout":  # black everywhere, the shape in the alpha
        image = Image.fromarray(np.dstack([np.zeros((64, 96, 3), np.uint8), shape]), "RGBA")
    elif form == "LA_cutout":
        image = Image.fromarray(np.dstack([np.full_like(shape, 255), shape]), "LA")
    else:
        image = Image.fromarray(shape.astype(np.uint16) * 257)
        assert image.mode.startswith("I;16")
    image.save(folder / "mask0.png")
    mask = load_scene(folder=str(folder)).masks[0]
    assert mask[10:40, 20:50].min() == 1.0 and mask.sum() == 30 * 30


def test_mask_channel_setting_forces_a_channel(tmp_path):
    folder = write_scene(tmp_path / "s", boxes=((20, 10, 50, 40),))
    green = np.zeros((64, 96, 3), dtype=np.uint8)
    green[10:40, 20:50, 1] = 255
    Image.fromarray(green).save(folder / "mask0.png")
    with pytest.raises(UserInputError, match=r"is empty \(read from its red channel; data.mask_channel"):
        load_scene(folder=str(folder))
    assert load_scene(folder=str(folder), mask_channel="green").masks[0].sum() == 900
    with pytest.raises(UserInputError, match="data.mask_channel='cyan' is not one of auto, alpha"):
        load_scene(folder=str(folder), mask_channel="cyan")


def test_scene_warnings_for_identical_overlapping_and_tiny_masks():
    masks = torch.zeros(4, 64, 64)
    masks[0, :32, :32] = 1
    masks[1, :32, :32] = 1  # identical to 0
    masks[2, 8:40, 8:40] = 1  # overlaps 0 by 24*24 = 576 > half of 1024
    masks[3, 60:62, 60:62] = 1  # 4 px < one 16x16 attention cell of a 64-px scene (4x4 = 16 px)
    names = ["<a>", "<b>", "<c>", "<d>"]
    warnings = scene_warnings(SceneTensors(torch.zeros(3, 64, 64), masks), names, attention_side=16)
    assert warnings == [
        "the masks of <a> and <b> are identical: both tokens learn one concept.",
        "the masks of <a> and <c> overlap by 576 px, more than half of the smaller one: the two tokens will "
        "share what they learn.",
        "the masks of <b> and <c> overlap by 576 px, more than half of the smaller one: the two tokens will "
        "share what they learn.",
        "<d> covers 4 px, less than one 16x16 attention cell (16 px): its attention loss sees almost nothing of it.",
    ]


def test_class_count_must_match(scene_dir):
    (scene_dir / "classes.txt").write_text("only one\n")
    with pytest.raises(UserInputError, match="1 class names for 2 masks"):
        load_scene(folder=str(scene_dir))


def write_photos(folder, classes=("red box", "blue box")):
    """Two photos of one scene: photo a shows both boxes, photo b (48x48) only the blue one, as mask1.png."""
    write_scene(folder / "a")
    write_scene(folder / "b", size=(48, 48), boxes=((4, 4, 30, 40),))
    (folder / "b" / "mask0.png").rename(folder / "b" / "mask1.png")
    image = np.asarray(Image.open(folder / "b" / "img.jpg")).copy()
    image[4:40, 4:30] = (40, 40, 230)  # the blue box
    Image.fromarray(image).save(folder / "b" / "img.jpg")
    if classes:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


def test_several_photos_layout(tmp_path):
    scene = load_scene(folder=str(write_photos(tmp_path / "scene")))
    assert isinstance(scene, ScenePhotos) and scene.num_concepts == 2
    assert scene.class_names == ["red box", "blue box"]
    assert [photo.concepts for photo in scene.photos] == [[0, 1], [1]]
    assert [photo.image.size for photo in scene.photos] == [(96, 64), (48, 48)]
    photos = prepare_photos(scene, 32, background=True)
    assert [p.present.tolist() for p in photos] == [[True, True, True], [False, True, True]]
    assert photos[1].masks[0].abs().sum() == 0  # an absent concept's mask is empty
    assert photos[1].masks[1, 20, 10] == 1.0  # blue box: x 4..30, y 4..40 of 48 -> 2..20, 2..26 at 32
    torch.testing.assert_close(photos[1].masks[2], 1 - photos[1].masks[1])  # background: outside the shown box
    assert scene_warnings(photos[1], ["<a>", "<b>", "<bg>"], attention_side=8) == []


def test_several_photos_count_concepts_without_classes(tmp_path):
    scene = load_scene(folder=str(write_photos(tmp_path / "scene", classes=None)))
    assert scene.num_concepts == 2 and scene.class_names is None


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "a" / "mask0.png").rename(f / "a" / "mask5.png"), r"numbered \[5\] but classes.txt"),
    (lambda f: (f / "a" / "mask0.png").unlink(), r"concepts \[0\] of .* are in none of its photos"),
    (lambda f: [m.unlink() for m in (f / "b").glob("mask*.png")], r"photo folder .*b' has no masks"),
    (lambda f: (f / "b" / "classes.txt").write_text("blue box\n"), r"names its concepts once"),
])
def test_several_photos_bad_layouts(tmp_path, change, message):
    folder = write_photos(tmp_path / "scene")
    change(folder)
    with pytest.raises(UserInputError, match=message):
        load_scene(folder=str(folder))



def test_classes_file_with_a_byte_order_mark_and_any_line_endings(scene_dir):
    (scene_dir / "classes.txt").write_bytes(b"\xef\xbb\xbfred box\r\nblue box\r")  # Notepad's UTF-8, old Mac ends
    assert load_scene(folder=str(scene_dir)).class_names == ["red box", "blue box"]
