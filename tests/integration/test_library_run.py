"""A concept library through the commands a user runs: bas-train on two toy scenes (full fine-tuning, and a LoRA
phase 2 that exports an asset), then bas-generate with a prompt naming concepts of different pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import train as train_cli
from break_a_scene.config import ASSETS_DIR
from break_a_scene.figures import masks_overlay, tensor_to_image
from break_a_scene.scene import load_scene, prepare_photos
from tests.contract.cases import invoke

TRAIN = ["experiment=toyworld_library", "method.phase1_steps=2", "method.phase2_steps=2",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.samples=null",
         "callbacks.attention_maps.every_n_steps=1", "logger=none"]
PICTURES = ["toy_star_ring", "toy_cross_ring"]  # experiment=toyworld_library's folders
CROSS = "a photo of <asset0> on the left and <asset2> on the right"  # the star of one picture, the cross of the other


@pytest.mark.parametrize("variant", ["break_a_scene", "lora"])
def test_a_library_trains_exports_and_generates_across_pictures(tmp_path, variant):
    run = tmp_path / "run"
    code, err = invoke(train_cli.main, [*TRAIN, f"variant={variant}", f"hydra.run.dir={run}"])
    assert code == 0, err[-3000:]
    manifest = json.loads((run / "pipeline" / "break_a_scene.json").read_text())
    assert manifest["tokens"] == ["<asset0>", "<asset1>", "<asset2>"]
    assert manifest["class_names"] == ["orange star", "blue ring", "green cross"]
    assert manifest["format"] == ("lora_asset" if variant == "lora" else "pipeline")
    scene = Image.open(run / "visuals" / "scene.png").convert("RGB")
    assert scene.width == 2 * scene.height
    photos = prepare_photos(load_scene(folders=[str(ASSETS_DIR / "scenes" / name) for name in PICTURES]), 32)
    second = masks_overlay(tensor_to_image(photos[1].image), photos[1].masks.numpy(), labels=manifest["tokens"])
    right = scene.crop((scene.height, 0, scene.width, scene.height))  # the ring labelled in this photo too
    assert np.array_equal(np.asarray(right), np.asarray(second))
    out = tmp_path / "generated"
    code, err = invoke(generate_cli.main, [f"pipeline={run / 'pipeline'}", f"generation.prompts=['{CROSS}']",
                                           "generation.num_images_per_prompt=1", "generation.num_inference_steps=3",
                                           f"hydra.run.dir={out}"])
    assert code == 0, err[-3000:]
    assert Image.open(out / "0000.png").size == (32, 32)
    assert (out / "0000_attn_asset0.png").is_file() and (out / "0000_attn_asset2.png").is_file()
