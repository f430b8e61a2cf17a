"""Each bad input stops `bas-train` before training with one clear message and status 2, writing nothing."""

import sys

import pytest
from PIL import Image

from break_a_scene.cli.train import main
from tests.helpers import FAST


def bad(case: str, scene_dir, tmp_path) -> list[str]:
    if case == "missing_image":
        (scene_dir / "img.jpg").unlink()
    elif case == "missing_mask":
        return [f"data.scene.image={scene_dir / 'img.jpg'}", f"data.scene.masks=[{scene_dir / 'nomask.png'}]",
                "data.scene.folder=null"]
    elif case == "mask_size":
        Image.new("L", (20, 20), 255).save(scene_dir / "mask0.png")
    elif case == "empty_mask":
        Image.new("L", (96, 64), 0).save(scene_dir / "mask1.png")
    elif case == "full_mask":
        Image.new("L", (96, 64), 255).save(scene_dir / "mask1.png")
    elif case == "more_words":
        return ["data.initializer_words=[a,b,c]"]
    elif case == "fewer_words":
        return ["data.initializer_words=[a]"]
    elif case == "words_and_classes":
        return ["data.initializer_words=[a,b]", "data.initializer_from_classes=true"]
    elif case == "no_classes":
        (scene_dir / "classes.txt").unlink()
        return ["data.initializer_from_classes=true"]
    elif case == "token_exists":
        return ["data.tokens=[cat,'<asset1>']"]
    elif case == "resolution":
        return ["model.resolution=60"]
    elif case == "zero_steps":
        return ["method.phase1_steps=0", "method.phase2_steps=0"]
    elif case == "missing_weights":
        return ["model=sd21_base", "model.components.pretrained_model_name_or_path=nobody/no-such-model"]
    return []


CASES = {
    "missing_image": "has no image: add one of img.jpg",
    "missing_mask": "nomask.png' does not exist",
    "mask_size": "mask0.png' is 20x20 but image",
    "empty_mask": "mask1.png' is empty",
    "full_mask": "mask1.png' covers the whole image",
    "more_words": "data.initializer_words has 3 words for 2 masks",
    "fewer_words": "data.initializer_words has 1 words for 2 masks",
    "words_and_classes": "data.initializer_words and data.initializer_from_classes=true both",
    "no_classes": "data.initializer_from_classes=true needs class names: a classes.txt",
    "token_exists": "placeholder token 'cat' already exists",
    "resolution": "data.resolution=60 cannot be taken",
    "zero_steps": "method.phase1_steps and method.phase2_steps are both 0",
    "missing_weights": "'nobody/no-such-model' were not found",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, scene_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    out = tmp_path / "out"
    overrides = [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    overrides += bad(case, scene_dir, tmp_path)
    monkeypatch.setattr(sys, "argv", ["bas-train", *overrides])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and CASES[case] in err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "cache").exists()
