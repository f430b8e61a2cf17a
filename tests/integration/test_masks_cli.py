"""`bas-masks` and `bas-train data.scene.auto_masks=true` as a user runs them, with tiny random OWLv2 and SAM
saved to disk and loaded through transformers' real loaders and processors."""

import json
import shutil

import pytest
from PIL import Image

from break_a_scene.config import ASSETS_DIR
from break_a_scene.errors import UserInputError
from break_a_scene.masks import WordDetector, make_scene
from break_a_scene.scene import load_scene
from tests.helpers import FAST, compose_config
from tests.integration.test_cli import run
from tests.masks_models import save_tiny_owlv2, save_tiny_sam

CLASSES = ["cup", "saucer", "spoon"]


@pytest.fixture(scope="module")
def tiny_mask_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_models")
    return save_tiny_owlv2(root / "owlv2"), save_tiny_sam(root / "sam")


@pytest.fixture
def photo_folder(tmp_path):
    """The coffee photo with only its class names: what a user has before drawing masks."""
    folder = tmp_path / "photo"
    folder.mkdir()
    shutil.copyfile(ASSETS_DIR / "scenes" / "coffee" / "img.jpg", folder / "img.jpg")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


def _models(detector, segmenter, threshold=0.0):
    return [f"masks.detector.name_or_path={detector}", f"masks.segmenter.name_or_path={segmenter}",
            f"masks.detector.threshold={threshold}", "masks.device=cpu"]


def test_bas_masks_writes_a_scene_the_trainer_reads(tmp_path, photo_folder, tiny_mask_models):
    out = tmp_path / "scene"
    result = run("bas-masks", f"image={photo_folder / 'img.jpg'}", *_models(*tiny_mask_models),
                 "masks.instances=all", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "img.jpg").read_bytes() == (photo_folder / "img.jpg").read_bytes()
    scene = load_scene(folder=str(out))
    assert scene.class_names == CLASSES and len(scene.masks) == 3
    with Image.open(out / "preview.png") as picture:
        assert picture.size == (600, 400)
    report = json.loads((out / "masks.json").read_text())
    assert [m["class"] for m in report["masks"]] == CLASSES
    assert report["instances"] == "all" and report["detector"]["threshold"] == 0.0
    for entry, mask in zip(report["masks"], scene.masks):
        assert entry["area"] == pytest.approx(float((mask > 0.5).mean()), abs=1e-4)
    assert not list(out.glob(".bas-masks-*"))


def test_a_class_not_found_stops_naming_it_and_writes_nothing(tmp_path, photo_folder, tiny_mask_models):
    detector, segmenter = tiny_mask_models
    out = tmp_path / "scene"
    # no score exceeds 1: nothing is found
    with pytest.raises(UserInputError) as err:
        make_scene(photo_folder, CLASSES, out, {"name_or_path": str(detector), "threshold": 1.0},
                   {"name_or_path": str(segmenter)}, device="cpu")
    assert str(err.value).startswith(f"'cup', 'saucer', 'spoon' not found in '{photo_folder / 'img.jpg'}' at "
                                     "masks.detector.threshold=1.0")
    assert not out.exists()


def test_missing_weights_name_the_setting():
    with pytest.raises(UserInputError, match="point masks.detector.name_or_path at a local folder that "
                                             "save_pretrained wrote"):
        WordDetector.load("nobody/no-such-detector", device="cpu")


def test_train_makes_its_masks_first_into_its_own_folder(tmp_path, photo_folder, tiny_mask_models):
    from break_a_scene.training import check_inputs

    cfg = compose_config("train", [*FAST, f"data.scene.folder={photo_folder}", "data.scene.auto_masks=true",
                                   *_models(*tiny_mask_models)], tmp_path)
    scene = check_inputs(cfg).scene
    assert scene.class_names == CLASSES and len(scene.masks) == 3
    assert scene.source == str(tmp_path / "run" / "scene")
    assert (tmp_path / "run" / "scene" / "preview.png").is_file()
    assert sorted(p.name for p in photo_folder.iterdir()) == ["classes.txt", "img.jpg"]  # only read
    cfg.data.scene.masks = ["mask0.png"]
    with pytest.raises(UserInputError, match="auto_masks=true makes the masks itself; remove data.scene.masks"):
        check_inputs(cfg)


@pytest.mark.slow
def test_train_with_auto_masks_end_to_end(tmp_path, photo_folder, tiny_mask_models):
    out = tmp_path / "run"
    result = run("bas-train", *FAST, "logger=csv", f"data.scene.folder={photo_folder}", "data.scene.auto_masks=true",
                 *_models(*tiny_mask_models), f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "pipeline" / "break_a_scene.json").read_text())
    assert manifest["class_names"] == CLASSES and manifest["scene"] == str(out / "scene")
