"""A concept library: several scene folders as one scene whose concepts are matched by class name, and samples
that paste concepts of two pictures together."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import break_a_scene
from break_a_scene.data import UnionSamplingDataset
from break_a_scene.errors import UserInputError
from break_a_scene.scene import load_library, load_scene, prepare_photos
from break_a_scene.settings import LoaderSettings
from break_a_scene.toyworld.world import COLOURS
from tests.conftest import write_scene
from tests.unit.test_annotations import FIXTURES

ASSETS = Path(break_a_scene.__file__).parent / "assets" / "scenes"
STAR_RING, CROSS_RING = str(ASSETS / "toy_star_ring"), str(ASSETS / "toy_cross_ring")


def test_a_name_in_two_folders_is_one_concept():
    library = load_scene(folders=[STAR_RING, CROSS_RING])
    assert library.class_names == ["orange star", "blue ring", "green cross"] and library.num_concepts == 3
    assert [photo.concepts for photo in library.photos] == [[0, 1], [2, 1]]
    assert [t.present.tolist() for t in prepare_photos(library, 32)] == [[True, True, False], [False, True, True]]


def test_folders_of_any_layout_join_a_library(tmp_path):
    """A COCO folder of two photos and a LabelMe folder: "blue ball" and "red box" are each one concept."""
    library = load_library([str(FIXTURES / "coco"), str(FIXTURES / "labelme")])
    assert library.class_names == ["red box", "blue ball", "green leaf", "yellow kite"]
    assert [photo.concepts for photo in library.photos] == [[0, 1], [1, 2, 3], [0, 1]]


@pytest.mark.parametrize("case, expected", [
    ("repeated", "more than once"),
    ("unnamed", "does not name its concepts"),
    ("same_name", "names two of its masks alike"),
    ("with_folder", "set data.scene.folder, image, class_names and auto_masks to null/false"),
])
def test_library_refusals_are_one_line(tmp_path, case, expected):
    named = str(write_scene(tmp_path / "named", classes=["red box", "blue box"]))
    folders = {"repeated": [named, named],
               "unnamed": [named, str(write_scene(tmp_path / "unnamed"))],
               "same_name": [named, str(write_scene(tmp_path / "twins", classes=["red box", "red box"]))],
               "with_folder": [named, STAR_RING]}[case]
    with pytest.raises(UserInputError) as caught:
        load_scene(folder=STAR_RING if case == "with_folder" else None, folders=folders)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_mixed_samples_paste_concepts_of_both_pictures_in_their_own_colours(tmp_path):
    photos = prepare_photos(load_library([STAR_RING, CROSS_RING]), 32)
    settings = LoaderSettings(mix_photos_p=1.0, flip_p=0.0)
    from break_a_scene.toyworld.vocab import build_toyworld_tokenizer

    tokenizer = build_toyworld_tokenizer()
    names = ["orange", "blue", "green"]
    dataset = UnionSamplingDataset(photos, [tokenizer], names, [0, 1, 2], length=24, settings=settings)
    colours = {0: COLOURS["orange"], 1: COLOURS["blue"], 2: COLOURS["green"]}
    for index in range(len(dataset)):
        item = dataset[index]
        concepts = item["token_ids"].tolist()
        assert len(concepts) >= 2 and len(set(concepts)) == len(concepts)  # the other picture always adds one
        assert item["latent_key"] is None  # a new picture: its latents are not cached
        assert item["prompt"] == "a photo of " + " and ".join(names[c] for c in concepts)
        for concept, mask in zip(concepts, item["masks"]):
            core = mask > 0.99
            if core.sum() < 4:  # covered by a later concept
                continue
            mean = ((item["pixel_values"][:, core].mean(dim=1) + 1) * 127.5).tolist()
            assert mean == pytest.approx(colours[concept], abs=40), (index, concept)
        assert torch.equal(item["loss_region"][0], item["masks"].amax(dim=0))


def test_a_library_folder_with_several_photos_keeps_its_photos(tmp_path):
    from break_a_scene.toyworld.scenes import write_scene_folder
    from break_a_scene.toyworld.world import ToyObject, ToyScene

    scene = ToyScene((ToyObject("star", "orange", "left"), ToyObject("square", "pink", "right")), "black")
    several = write_scene_folder(scene, tmp_path / "views", photos=2)
    shutil.copytree(CROSS_RING, tmp_path / "cross")
    library = load_library([str(several), str(tmp_path / "cross")])
    assert library.class_names == ["orange star", "pink square", "green cross", "blue ring"]
    assert [photo.concepts for photo in library.photos] == [[0, 1], [0, 1], [2, 3]]
