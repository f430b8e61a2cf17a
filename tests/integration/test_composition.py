"""Separately trained LoRA assets composed at generation (the baseline a concept library must beat): two toy
assets on their shared base, in lora and rows mode, and the compositions that cannot work refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import train as train_cli
from tests.contract.cases import TOY_SCENE, invoke, one_line

CROSS_RING = TOY_SCENE.parent / "toy_cross_ring"
TRAIN = ["experiment=toyworld", "variant=lora", "method.phase1_steps=2", "method.phase2_steps=2",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.samples=null",
         "callbacks.attention_maps=null", "callbacks.scene=null", "logger=none"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> list[str]:
    folders = []
    for scene in (TOY_SCENE, CROSS_RING):
        run = tmp_path_factory.mktemp(scene.name)
        code, err = invoke(train_cli.main, [*TRAIN, f"data.scene.folder={scene}", f"hydra.run.dir={run}"])
        assert code == 0, err[-3000:]
        folders.append(str(run / "pipeline"))
    return folders


def generate(pipeline: str, prompt: str, out, *extra: str) -> tuple[int, str]:
    return invoke(generate_cli.main, [f"pipeline={pipeline}", f"generation.prompts=['{prompt}']",
                                      "generation.num_images_per_prompt=1", "generation.num_inference_steps=3",
                                      f"hydra.run.dir={out}", *extra])


def pixels(folder) -> np.ndarray:
    return np.asarray(Image.open(folder / "0000.png"))


@pytest.mark.parametrize("mode", ["lora", "rows"])
def test_two_assets_compose_with_numbered_tokens(assets, tmp_path, mode):
    code, err = generate(assets[0], "a photo of <1:asset0> and <2:asset0>", tmp_path / "both",
                         f"generation.compose=[{assets[1]}]", f"generation.compose_mode={mode}")
    assert code == 0, err[-3000:]
    record = json.loads((tmp_path / "both" / "samples.jsonl").read_text().splitlines()[0])
    assert sorted(record["attention"]) == ["<1:asset0>", "<2:asset0>"]


def test_an_asset_weighted_zero_leaves_the_other_as_it_was_alone(assets, tmp_path):
    """Weights [1, 0]: the second asset's adapters add nothing, and its rows are not in the prompt, so the first
    asset's token draws exactly what the first asset alone draws."""
    assert generate(assets[0], "a photo of <asset0> on a navy background", tmp_path / "alone")[0] == 0
    code, err = generate(assets[0], "a photo of <1:asset0> on a navy background", tmp_path / "composed",
                         f"generation.compose=[{assets[1]}]", "generation.compose_weights=[1.0,0.0]")
    assert code == 0, err[-3000:]
    assert np.array_equal(pixels(tmp_path / "alone"), pixels(tmp_path / "composed"))
    code, _ = generate(assets[0], "a photo of <1:asset0> on a navy background", tmp_path / "weighted",
                       f"generation.compose=[{assets[1]}]")
    assert code == 0 and not np.array_equal(pixels(tmp_path / "alone"), pixels(tmp_path / "weighted"))


def test_compositions_that_cannot_work_are_one_line(assets, tmp_path):
    other_base = tmp_path / "other_base"
    shutil.copytree(assets[1], other_base)
    manifest = json.loads((other_base / "break_a_scene.json").read_text())
    (other_base / "break_a_scene.json").write_text(json.dumps({**manifest, "base_model": "somewhere/else"}))
    cases = {
        "twice": ([f"generation.compose=[{assets[0]}]"], "an asset twice"),
        "other_base": ([f"generation.compose=[{other_base}]"], "composed assets share their base model"),
        "weights": ([f"generation.compose=[{assets[1]}]", "generation.compose_weights=[1.0]"], "one weight"),
        "mode": ([f"generation.compose=[{assets[1]}]", "generation.compose_mode=sum"], "compose_mode='sum'"),
        "old_name": ([f"generation.compose=[{assets[1]}]"], "did not learn"),
    }
    for case, (extra, expected) in cases.items():
        prompt = "a photo of <asset0>" if case == "old_name" else "a photo of <1:asset0>"
        code, err = generate(assets[0], prompt, tmp_path / case, *extra)
        assert code == 2 and expected in one_line(err), (case, err[-2000:])
        assert not (tmp_path / case / "0000.png").exists()
