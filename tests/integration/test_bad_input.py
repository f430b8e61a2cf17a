"""Each bad input stops `bas-train` before training with one clear message and status 2, writing nothing."""

import sys

import pytest
from PIL import Image

from break_a_scene.cli.train import main
from tests.conftest import write_scene
from tests.helpers import FAST, assert_one_line, header_only_png


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
    elif case == "huge_image":
        (scene_dir / "img.jpg").unlink()
        header_only_png(scene_dir / "img.png", 20000, 20000)
    elif case in ("latin1_classes", "utf16_classes"):
        text = "red box\nblue café\n"
        (scene_dir / "classes.txt").write_bytes(text.encode("latin-1" if case == "latin1_classes" else "utf-16"))
        return ["data.initializer_from_classes=true"]
    elif case == "image_and_photos":
        write_scene(scene_dir / "photo_b")
    elif case == "unknown_choice":
        return ["memory=bogus"]
    elif case == "removed_callback":
        return ["callbacks.phase_switch=null"]
    elif case == "ema_without_masked_loss":
        return ["variant=ema_teacher", "method.masked_loss=false"]
    elif case == "replace_places":
        return ["data.loader.replace_places=slots"]
    elif case == "replace_backdrop":
        return ["data.loader.replace_backdrop=scene"]
    elif case == "replace_from_step":
        return ["data.loader.replace_from_step=-1"]
    elif case == "layout_phrases":
        return ["data.loader.layout_phrases=on the left"]
    elif case == "ema_decay":
        return ["variant=ema_teacher", "method.ema_decay=1.0"]
    elif case == "unquoted_value":
        return ["data.prior_preservation.class_prompt=a photo (at the beach)"]
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
    "zero_steps": "method.phase1_steps and method.phase2_steps: both are 0",
    "missing_weights": "'nobody/no-such-model' were not found",
    "huge_image": "is 20000x20000 pixels (400 MP), over the limit of 100 MP; shrink it first",
    "latin1_classes": "classes.txt' is not UTF-8 text (byte 0xe9 at offset 16",
    "utf16_classes": "classes.txt' is UTF-16 text; save it as UTF-8",
    "image_and_photos": "holds both an image of its own (img.jpg) and photo subfolders (photo_b)",
    "unknown_choice": "Could not find 'memory/bogus'; choose one of 12gb, 16gb, 24gb, full, lora_bf16, qlora_nf4.",
    "removed_callback": "Could not override 'callbacks.phase_switch'.",
    "ema_without_masked_loss": "method.lambda_ema_teacher=0.2: it splits the masked loss by concept: it needs "
                               "method.masked_loss=true",
    "ema_decay": "method.ema_decay=1.0: must be at least 0 and below 1.",
    "replace_places": "data.loader.replace_places=slots: use one of random, scene.",
    "replace_backdrop": "data.loader.replace_backdrop=scene: use one of random, photo.",
    "replace_from_step": "data.loader.replace_from_step=-1: must be at least 0 (0: re-place from the start;",
    "layout_phrases": "data.loader.layout_phrases=on the left: must be a list ([...]) of str, or null (one phrase "
                      "for each vertical band",
    "unquoted_value": "cannot read the override 'data.prior_preservation.class_prompt=a photo (at the beach)'",
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
    assert_one_line(err, CASES[case])
    assert not out.exists() and not (tmp_path / "cache").exists()
