"""A new model family is one class and one YAML: a family written in the test folder, its YAML found on Hydra's
search path, trains 1 + 1 steps through the real Trainer on its own target, exports, and generates with
attention maps, with no change to the package."""

from __future__ import annotations

import json
import sys

import pytest

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
    assert isinstance(module.family, Throwaway) and module.phase == 2 and module.trainer.global_step == 2
    assert len(Throwaway.targets) == 2  # both steps regressed the family's own (rectified-flow) target
    assert module.denoiser is module.family.unet

    pipeline = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline / "break_a_scene.json").read_text())["family"] == "tests.families.throwaway.Throwaway"
    records = generate(str(pipeline), str(tmp_path / "samples"), ["a photo of <asset0>"], num_images_per_prompt=1,
                       num_inference_steps=2, device="cpu", progress=False)
    assert records[0]["attention"] == {"<asset0>": "0000_attn_asset0.png"}


def test_an_export_finds_its_family_only_where_it_is_safe(tiny_export, tmp_path):
    """By the manifest's name: a family of the package, or of a module already imported (this test imported
    the throwaway one); never a module the manifest would make Python import. Without a name (older exports):
    the package's family of the pipeline class, whatever other families the process has imported."""
    from break_a_scene.errors import UserInputError
    from break_a_scene.families.base import family_named
    from break_a_scene.families.stable_diffusion import StableDiffusion

    assert family_named("tests.families.throwaway.Throwaway", "StableDiffusionPipeline") is Throwaway
    assert family_named(None, "StableDiffusionPipeline") is StableDiffusion
    assert family_named(StableDiffusion.qualified_name(), "StableDiffusionPipeline") is StableDiffusion
    for name in ("this.Family", "break_a_scene.families.sd3.inner.Family", "break_a_scene.families.nothing.Family"):
        with pytest.raises(UserInputError, match="neither one of break_a_scene.families nor imported"):
            family_named(name, "StableDiffusionPipeline")
    assert "this" not in sys.modules
    assert json.loads((tiny_export / "break_a_scene.json").read_text())["family"] == StableDiffusion.qualified_name()
