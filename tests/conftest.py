"""Shared fixtures: offline environment, tiny models built from the shipped `tiny` config, scenes on disk."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def tiny_components(**overrides):
    """Fresh random `tiny` parts, exactly as `model=tiny` builds them."""
    cfg = OmegaConf.load(CONF / "model" / "tiny.yaml").components
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return instantiate(cfg)


@pytest.fixture
def tiny():
    return tiny_components()


def write_scene(folder: Path, size=(96, 64), boxes=((8, 8, 40, 40), (50, 20, 90, 60)), classes=None) -> Path:
    """An image with coloured rectangles and one soft-edged mask per rectangle, in the released layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    colours = [(230, 40, 40), (40, 40, 230), (40, 230, 40)]
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        image[y0:y1, x0:x1] = colours[index % 3]
        mask = np.zeros((size[1], size[0]), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 255
        mask[y0, x0:x1] = 128  # a soft edge row
        Image.fromarray(mask).save(folder / f"mask{index}.png")
    Image.fromarray(image).save(folder / "img.jpg")
    if classes:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


@pytest.fixture
def scene_dir(tmp_path) -> Path:
    return write_scene(tmp_path / "scene", classes=["red box", "blue box"])


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """An export of the tiny model with one learned token (untrained), as bas-generate and bas-edit read it;
    tests copy it before changing it."""
    from break_a_scene.export import export_pipeline

    family = tiny_components()
    tokens = family.add_placeholder_tokens(["<asset0>"])
    manifest = {"tokens": tokens.names, "token_ids": tokens.ids, "resolution": 64, "attention_resolution_divisor": 4}
    return export_pipeline(family, tmp_path_factory.mktemp("export") / "pipeline", manifest)
