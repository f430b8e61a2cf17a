import random

import numpy as np
import pytest
import torch

from break_a_scene.scene import load_scene
from break_a_scene.toyworld.scenes import other_photos, read_scene_json, write_scene_set
from break_a_scene.toyworld.vocab import build_toyworld_tokenizer, world_words
from break_a_scene.toyworld.world import COLOURS, SLOTS, ToyObject, ToyScene, caption, render, sample_scene


def test_same_seed_same_scene_and_pixels():
    a, b = sample_scene(random.Random(7)), sample_scene(random.Random(7))
    assert a == b
    assert np.array_equal(np.asarray(render(a)[0]), np.asarray(render(b)[0]))


def test_masks_cover_their_objects_in_their_colour():
    scene = ToyScene((ToyObject("square", "red", "left"), ToyObject("circle", "blue", "right")), "black")
    image, masks = render(scene)
    pixels = np.asarray(image).astype(float)
    assert len(masks) == 2 and masks[0].shape == (32, 32)
    for obj, mask in zip(scene.objects, masks):
        inside = pixels[mask > 0.99].mean(axis=0)
        assert np.abs(inside - COLOURS[obj.colour]).max() < 2
        columns = np.nonzero(mask.max(axis=0) > 0.5)[0]
        slot = SLOTS.index(obj.slot)
        assert columns.min() >= slot * 32 / 3 - 1 and columns.max() <= (slot + 1) * 32 / 3  # stays in its slot
    assert (masks[0] * masks[1]).max() == 0
    assert 0 < masks[0][(masks[0] > 0) & (masks[0] < 1)].size  # soft edges


def test_caption_says_everything_by_default():
    scene = ToyScene((ToyObject("ring", "orange", "left"), ToyObject("star", "blue", "middle")), "teal")
    assert caption(scene) == "a photo of an orange ring on the left and a blue star in the middle on a teal background"


def test_random_captions_sometimes_drop_position_and_background():
    scene = ToyScene((ToyObject("ring", "orange", "right"),), "gray")
    seen = {caption(scene, random.Random(i)) for i in range(40)}
    assert "a photo of an orange ring" in seen
    assert "a photo of an orange ring on the right on a gray background" in seen


def test_pruned_tokenizer_splits_world_words_like_clip():
    from break_a_scene.clip_tokenizer import build_clip_tokenizer

    small, full = build_toyworld_tokenizer(), build_clip_tokenizer()
    assert len(small) < 1000 and small.model_max_length == 40
    for word in world_words():
        assert small.convert_ids_to_tokens(small.encode(word, add_special_tokens=False)) == \
            full.convert_ids_to_tokens(full.encode(word, add_special_tokens=False))
    assert small.convert_ids_to_tokens(small("a zebra").input_ids)[2:-2] == ["z", "e", "b", "r"]


@pytest.mark.parametrize("textures", [False, True])
def test_scene_folders_load_through_the_training_code(tmp_path, textures):
    folders = write_scene_set(tmp_path, 4, seed=3, textures=textures)
    for folder, count in zip(folders, (2, 3, 2, 3)):
        scene = load_scene(folder=str(folder))
        truth = read_scene_json(folder)
        assert scene.num_concepts == count == len(truth.objects)
        assert scene.class_names == [obj.name for obj in truth.objects]
        assert scene.image.size == (32, 32)


def test_high_frequency_share_finds_the_checkerboard_and_nothing_in_flat_or_smooth_images():
    from break_a_scene.toyworld.quality import high_frequency_share

    flat = torch.full((1, 3, 32, 32), 0.3)
    checker = (torch.arange(32).view(-1, 1) + torch.arange(32).view(1, -1)) % 2 * 2.0 - 1.0  # +-1, period 2
    wave = torch.cos(torch.arange(32) * 2 * torch.pi / 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)  # 1/32 cycle/px
    shares = high_frequency_share(torch.cat([flat, flat + 0.1 * checker, wave, wave + 0.1 * checker]))
    assert shares[0] == 0 and abs(float(shares[1]) - 1.0) < 1e-6 and float(shares[2]) < 1e-6
    # mean powers: the wave 1/2, the checkerboard 0.1^2, so its share is 0.01 / 0.51
    assert abs(float(shares[3]) - 0.01 / 0.51) < 1e-5


def test_several_photos_show_the_same_objects_in_new_slots_on_new_backgrounds(tmp_path):
    one = write_scene_set(tmp_path / "one", count=2, seed=3)
    three = write_scene_set(tmp_path / "three", count=2, seed=3, photos=3)
    for single, several in zip(one, three):
        assert (several / "photo_0" / "img.png").read_bytes() == (single / "img.png").read_bytes()  # pairs with it
        assert read_scene_json(several) == read_scene_json(single)
        scene = load_scene(folder=str(several))
        assert scene.num_concepts == len(read_scene_json(single).objects) and len(scene.photos) == 3
        truth = read_scene_json(single)
        views = [truth, *other_photos(truth, 2, random.Random(f"photos-3-{one.index(single)}"))]
        assert len({view.background for view in views}) == 3
        for slots in zip(*[[o.slot for o in view.objects] for view in views]):
            assert len(set(slots)) == 3  # every object in every slot across the 3 photos
        for view, photo in zip(views, scene.photos):  # mask i is object i, wherever that photo puts it
            _, rendered = render(view, 32)
            for mask, truth_mask in zip(photo.masks, rendered):
                assert np.abs(mask - truth_mask).max() <= 0.5 / 255 + 1e-6
