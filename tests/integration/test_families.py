"""A new model family is one class and one YAML: a family written in the test folder, its YAML found on Hydra's
search path, trains 1 + 1 steps through the real Trainer on its own target, exports, and generates with
attention maps, with no change to the package."""

from __future__ import annotations

import json

from break_a_scene.generate import generate
from break_a_scene.training import train
from tests.conftest import REPO
from tests.families.throwaway import Throwaway
from tests.helpers import FAST, compose_config


def test_a_family_from_the_test_folder_trains_exports_and_generates(tmp_path, scene_dir):
    overrides = [*FAST, f"hydra.searchpath=[file://{REPO / 'tests' / 'families'}]", "model=throwaway",
                 f"data.scene.folder={scene_dir}", "method.phase1_steps=1", "method.phase2_steps=1"]
    cfg = compose_config("train", overrides, tmp_path)
    Throwaway.targets.clear()
    module = train(cfg)
    assert isinstance(module.components, Throwaway) and module.phase == 2 and module.trainer.global_step == 2
    assert len(Throwaway.targets) == 2  # both steps regressed the family's own (rectified-flow) target
    assert module.denoiser is module.components.unet

    pipeline = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline / "break_a_scene.json").read_text())["family"] == "tests.families.throwaway.Throwaway"
    records = generate(str(pipeline), str(tmp_path / "samples"), ["a photo of <asset0>"], num_images_per_prompt=1,
                       num_inference_steps=2, device="cpu", progress=False)
    assert records[0]["attention"] == {"<asset0>": "0000_attn_asset0.png"}
