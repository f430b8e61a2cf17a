"""Several photos of one scene, trained by the real Trainer on the tiny model through bas-train's config."""

import pytest
from PIL import Image

from break_a_scene.export import read_manifest
from break_a_scene.training import build_run
from tests.helpers import FAST, compose_config
from tests.unit.test_scene import write_photos


def test_training_on_two_photos_mixes_them_in_a_batch(tmp_path):
    folder = write_photos(tmp_path / "scene")
    cfg = compose_config("train", [*FAST, f"data.scene.folder={folder}", "data.loader.batch_size=2",
                                   "callbacks.attention_maps=null"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    trainer.fit(module, datamodule=datamodule)
    # each picture encoded once: both photos were seen, and no key names a photo the scene does not have
    photos = {key.removesuffix("_flipped") for key in module.latents.entries}
    assert photos == {"photo0", "photo1"}
    assert module.trainer.global_step == 6
    scene_picture = Image.open(tmp_path / "run" / "visuals" / "scene.png")
    assert scene_picture.width == 2 * scene_picture.height  # the two photos side by side
    manifest = read_manifest(tmp_path / "run" / "pipeline")
    assert manifest["scene"] == str(folder) and manifest["class_names"] == ["red box", "blue box"]


def test_auto_masks_refuses_several_photos_before_loading_anything(tmp_path):
    from break_a_scene.errors import UserInputError
    from break_a_scene.training import check_inputs

    folder = write_photos(tmp_path / "scene")
    cfg = compose_config("train", [*FAST, f"data.scene.folder={folder}", "data.scene.auto_masks=true"], tmp_path)
    with pytest.raises(UserInputError, match="holds several; run bas-masks on each photo's folder"):
        check_inputs(cfg)
    assert not (tmp_path / "run" / "scene").exists()
