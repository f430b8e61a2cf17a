from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from break_a_scene.clip_tokenizer import build_clip_tokenizer
from break_a_scene.data import (
    UnionSamplingDataModule,
    UnionSamplingDataset,
    backdrop_colour,
    box_centre,
    collate_union_samples,
    layout_phrase,
    replace_concepts,
)
from break_a_scene.errors import UserInputError
from break_a_scene.scene import SceneTensors
from break_a_scene.settings import LoaderSettings

NAMES = ["<asset0>", "<asset1>", "<asset2>"]


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_clip_tokenizer()
    tok.add_tokens(NAMES)
    return tok


def asymmetric_scene(side=8):
    image = torch.linspace(-1, 1, side).expand(3, side, side).clone()  # brightness rises left -> right
    masks = torch.zeros(3, side, side)
    masks[0, :, :2] = 1  # left strip
    masks[1, :2, :] = 1  # top strip
    masks[2, -2:, -3:] = 1  # bottom-right block
    return SceneTensors(image=image, masks=masks)


def dataset(tokenizer, length=3000, offset=0, replace_from=0, scene=None, **loader):
    """The test scene's samples, drawn with `data.loader` settings `loader`."""
    return UnionSamplingDataset(scene or asymmetric_scene(), [tokenizer], NAMES, [49408, 49409, 49410], length,
                                LoaderSettings(**loader), seed=1, offset=offset, replace_from=replace_from)


def test_union_sampling_statistics(tokenizer):
    data = dataset(tokenizer)
    ks, subsets, orders, flips = Counter(), Counter(), Counter(), 0
    for i in range(len(data)):
        item = data[i]
        chosen = tuple(int(t) - 49408 for t in item["token_ids"])
        ks[len(chosen)] += 1
        subsets[frozenset(chosen)] += 1
        orders[chosen] += 1
        flips += bool(item["pixel_values"][0, 0, 0] > 0)
    n = len(data)
    for k in (1, 2, 3):  # k ~ U{1..3}: 1000 each; 4 sigma ~ 100
        assert abs(ks[k] - n / 3) < 100, ks
    for single in range(3):  # given k=1, each concept 1/3 -> ~333
        assert abs(subsets[frozenset([single])] - n / 9) < 80
    # given k=3, the 6 orders are equally likely -> ~167 each
    full = [count for order, count in orders.items() if len(order) == 3]
    assert len(full) == 6 and max(full) - min(full) < 90
    assert abs(flips - n / 2) < 110


def test_prompt_and_masks_follow_the_same_order(tokenizer):
    data = dataset(tokenizer, flip_p=0.0)
    scene = asymmetric_scene()
    seen_multi = False
    for i in range(50):
        item = data[i]
        order = [int(t) - 49408 for t in item["token_ids"]]
        assert item["prompt"] == "a photo of " + " and ".join(NAMES[j] for j in order)
        assert torch.equal(item["masks"], scene.masks[order])
        ids = tokenizer(item["prompt"], padding="max_length", max_length=77).input_ids
        assert item["input_ids"].tolist() == [ids]  # one tokenizer
        seen_multi |= len(order) > 1
    assert seen_multi


def test_flip_keeps_image_and_masks_aligned(tokenizer):
    data = dataset(tokenizer, length=40, flip_p=1.0)
    scene = asymmetric_scene()
    item = data[0]
    order = [int(t) - 49408 for t in item["token_ids"]]
    assert torch.equal(item["pixel_values"], scene.image.flip(-1))
    assert torch.equal(item["masks"], scene.masks[order].flip(-1))
    if 0 in order:  # the left strip is now on the right
        assert item["masks"][order.index(0), :, -2:].min() == 1


THIRDS = [" on the left", " in the middle", " on the right"]


def test_layout_captions_say_where_each_mask_stands(tokenizer):
    # box centres: the left strip 1/8 (left third), the top strip 4/8 (middle), the bottom-right block 6.5/8 (right)
    where = {0: " on the left", 1: " in the middle", 2: " on the right"}
    plain, layout = dataset(tokenizer, length=30, flip_p=0.0), dataset(tokenizer, length=30, flip_p=0.0,
                                                                        layout_phrases=THIRDS)
    for i in range(30):
        item = layout[i]
        order = [int(t) - 49408 for t in item["token_ids"]]
        assert item["prompt"] == "a photo of " + " and ".join(NAMES[j] + where[j] for j in order)
        ids = tokenizer(item["prompt"], padding="max_length", max_length=77).input_ids
        assert item["input_ids"].tolist() == [ids]
        assert torch.equal(item["pixel_values"], plain[i]["pixel_values"])
        assert item["noise_seed"] == plain[i]["noise_seed"]
    flipped = dataset(tokenizer, length=30, flip_p=1.0, layout_phrases=THIRDS)  # the strip and the block swap sides
    mirrored = {0: " on the right", 1: " in the middle", 2: " on the left"}
    for i in range(30):
        order = [int(t) - 49408 for t in flipped[i]["token_ids"]]
        assert flipped[i]["prompt"] == "a photo of " + " and ".join(NAMES[j] + mirrored[j] for j in order)


def test_layout_captions_follow_re_placed_concepts(tokenizer):
    data = dataset(tokenizer, length=60, flip_p=0.0, replace_p=1.0, layout_phrases=THIRDS)
    moved_sides = set()
    for i in range(60):
        item = data[i]
        phrases = []
        for mask in item["masks"]:
            cols = (mask > 0.5).any(dim=0).nonzero().flatten()
            centre = (int(cols[0]) + int(cols[-1]) + 1) / 2 if len(cols) else None  # in pixels of 8
            phrases.append("" if centre is None else THIRDS[0] if centre < 8 / 3 else
                           THIRDS[1] if centre < 16 / 3 else THIRDS[2])
        order = [int(t) - 49408 for t in item["token_ids"]]
        assert item["prompt"] == "a photo of " + " and ".join(NAMES[j] + p for j, p in zip(order, phrases))
        moved_sides.update((j, p) for j, p in zip(order, phrases))
    assert {(0, THIRDS[1]), (0, THIRDS[2]), (2, THIRDS[0])} <= moved_sides  # concepts were captioned in new places


@pytest.mark.parametrize("bad", ["on the left", 3, [], [" on the left", 1]])
def test_layout_phrases_must_be_a_list_of_phrases(bad):
    with pytest.raises(UserInputError, match=r"data.loader.layout_phrases=.*: (must be a list|each item|give at le)"):
        LoaderSettings(layout_phrases=bad)
    assert LoaderSettings(layout_phrases=list(OmegaConf.create({"x": THIRDS}).x)).layout_phrases == THIRDS


def test_layout_phrase_of_an_empty_mask_or_without_phrases_is_empty():
    assert layout_phrase(torch.zeros(8, 8), THIRDS) == ""
    assert layout_phrase(torch.ones(8, 8), None) == ""
    assert layout_phrase(torch.ones(8, 8), [" here"]) == " here"


def test_without_union_sampling_one_concept(tokenizer):
    data = dataset(tokenizer, length=200, union_sampling=False)
    assert {len(data[i]["token_ids"]) for i in range(200)} == {1}


def test_same_index_same_draw(tokenizer):
    a, b = dataset(tokenizer), dataset(tokenizer)
    assert a[17]["prompt"] == b[17]["prompt"]


def test_batch_of_two_with_different_k(tokenizer):
    data = dataset(tokenizer)
    items, i = [], 0
    while len({len(it["token_ids"]) for it in items}) < 2 or len(items) < 2:
        items = [data[i], data[i + 1]]
        i += 2
    batch = collate_union_samples(items)
    width = max(len(it["token_ids"]) for it in items)
    assert batch["masks"].shape == (2, width, 8, 8)
    assert batch["token_ids"].shape == (2, width)
    for row, item in enumerate(items):
        k = len(item["token_ids"])
        assert batch["token_valid"][row].tolist() == [True] * k + [False] * (width - k)
        assert (batch["token_ids"][row, k:] == -1).all()
        assert torch.equal(batch["union_mask"][row, 0], item["masks"].amax(dim=0))
    assert batch["input_ids"].shape == (2, 1, 77)


def test_class_images_travel_with_samples(tokenizer):
    classes = torch.stack([torch.full((3, 8, 8), float(v)) for v in (0.1, 0.2)])
    data = UnionSamplingDataset(
        asymmetric_scene(), [tokenizer], NAMES, [49408, 49409, 49410], 4, class_images=classes,
        class_prompt="a photo at the beach",
    )
    assert [round(float(data[i]["class_pixel_values"][0, 0, 0]), 1) for i in range(4)] == [0.1, 0.2, 0.1, 0.2]
    assert data[0]["class_input_ids"][0, :7].tolist() == [49406, 320, 1125, 536, 518, 2117, 49407]


def test_solid_background_pastes_the_chosen_concepts_on_one_colour(tokenizer):
    data = dataset(tokenizer, length=20, flip_p=0.0, solid_background=True)
    scene = asymmetric_scene()
    colours = set()
    for index in range(20):
        item = data[index]
        union = item["masks"].amax(dim=0) > 0
        assert torch.equal(item["pixel_values"][:, union], scene.image[:, union])  # the concepts as they are
        outside = item["pixel_values"][:, ~union]
        assert torch.equal(outside, outside[:, :1].expand_as(outside))  # one colour everywhere else
        colours.add(tuple(outside[:, 0].tolist()))
    assert len(colours) == 20  # a new colour each sample


def test_one_photo_draws_what_it_drew_before_photos_existed(tokenizer):
    """Pinned draws of the one-image stream, recorded before several-photo scenes were added."""
    data = dataset(tokenizer, length=4)
    drawn = [(data[i]["prompt"], data[i]["latent_key"], data[i]["noise_seed"]) for i in range(4)]
    assert drawn == [
        ("a photo of <asset0> and <asset1>", "scene", 150625105277982079),
        ("a photo of <asset0> and <asset1>", "scene", 2677496999085812581),
        ("a photo of <asset0>", "scene", 4458233502074471045),
        ("a photo of <asset0> and <asset1> and <asset2>", "scene_flipped", 4256832244467263896),
    ]
    assert UnionSamplingDataset([asymmetric_scene()], [tokenizer], NAMES, [49408, 49409, 49410], 4,
                                seed=1)[3]["prompt"] == drawn[3][0]


SHOWN = [(0, 1, 2), (0, 2), (1,)]  # the concepts each of three photos shows


def three_photos(side=8):
    """Photo p: brightness rising left -> right with slope (p + 1) / 3 (a flip turns its sign), concept c a
    one-pixel column at x = c + 2p (asymmetric, so a flip moves it), absent concepts zero."""
    photos = []
    for p, shown in enumerate(SHOWN):
        image = (torch.linspace(-1, 1, side) * (p + 1) / 3).expand(3, side, side).clone()
        masks = torch.zeros(3, side, side)
        present = torch.zeros(3, dtype=torch.bool)
        for c in shown:
            masks[c, :, c + 2 * p] = 1
            present[c] = True
        photos.append(SceneTensors(image=image, masks=masks, present=present))
    return photos


def test_several_photos_sampling_statistics_and_alignment(tokenizer):
    photos = three_photos()
    data = UnionSamplingDataset(photos, [tokenizer], NAMES, [49408, 49409, 49410], 3000, seed=2)
    per_photo, ks, singles, flips = Counter(), Counter(), Counter(), 0
    for i in range(len(data)):
        item = data[i]
        corner = float(item["pixel_values"][0, 0, 0])
        p, flipped = round(abs(corner) * 3) - 1, corner > 0
        chosen = [int(t) - 49408 for t in item["token_ids"]]
        assert item["photo"] == p and set(chosen) <= set(SHOWN[p])  # only concepts the photo shows
        assert item["latent_key"] == f"photo{p}" + ("_flipped" if flipped else "")
        expected = photos[p].masks[chosen]
        assert torch.equal(item["masks"], expected.flip(-1) if flipped else expected)  # the same photo, flipped alike
        assert item["prompt"] == "a photo of " + " and ".join(NAMES[c] for c in chosen)
        per_photo[p] += 1
        ks[p, len(chosen)] += 1
        if len(chosen) == 1:
            singles[p, chosen[0]] += 1
        flips += flipped
    n = len(data)
    for p in range(3):  # photo ~ U{0, 1, 2}: 1000 each; 4 sigma ~ 100
        assert abs(per_photo[p] - n / 3) < 100, per_photo
    for k in (1, 2, 3):  # photo 0 shows 3 concepts: k ~ U{1..3}, ~333 each
        assert abs(ks[0, k] - n / 9) < 80, ks
    for k in (1, 2):  # photo 1 shows 2: k ~ U{1, 2}, ~500 each
        assert abs(ks[1, k] - n / 6) < 90, ks
    assert ks[2, 1] == per_photo[2] and singles[2, 1] == per_photo[2]  # photo 2 shows concept 1 only
    assert abs(singles[1, 0] - singles[1, 2]) < 90  # given photo 1 and k = 1: concept 0 or 2, ~250 each
    assert abs(flips - n / 2) < 110


def test_a_batch_mixes_photos(tokenizer):
    data = UnionSamplingDataset(three_photos(), [tokenizer], NAMES, [49408, 49409, 49410], 8, seed=2)
    batch = collate_union_samples([data[i] for i in range(8)])
    assert len({key.removesuffix("_flipped") for key in batch["latent_keys"]}) > 1
    assert batch["pixel_values"].shape == (8, 3, 8, 8)


def test_replace_concepts_moves_each_concept_whole_onto_one_colour():
    side = 16
    image = torch.linspace(-1, 1, side * side).reshape(1, side, side).expand(3, side, side).clone()
    masks = torch.zeros(2, side, side)
    masks[0, 2:5, 1:4] = 1  # a 3x3 block
    masks[1, 10:12, 8:14] = 1  # a 2x6 bar
    generator = torch.Generator().manual_seed(0)
    moved_somewhere = 0
    for _ in range(50):
        new_image, new_masks = replace_concepts(image, masks, generator)
        for j in range(2):
            kept = new_masks[j] > 0
            # the concept's pixels, shifted: the first masked pixel of the moved mask holds the original's
            (y, x), (y0, x0) = kept.nonzero()[0].tolist(), (masks[j] > 0).nonzero()[0].tolist()
            assert torch.equal(new_image[:, kept], image.roll((y - y0, x - x0), dims=(1, 2))[:, kept])
            moved_somewhere += (y, x) != (y0, x0)
        assert int((new_masks[1] > 0).sum()) == 12  # pasted last: whole
        assert int((new_masks[0] > 0).sum()) >= 8  # the bar covers at most 10% of its own 12 px of the block
        outside = new_image[:, new_masks.amax(dim=0) == 0]
        assert torch.equal(outside, outside[:, :1].expand_as(outside))  # one solid colour around them
    assert moved_somewhere >= 95  # nearly always somewhere new (100 concept placements)


def test_replace_concepts_keeps_every_mask_inside_and_overlaps_small():
    side = 12
    image, masks = torch.zeros(3, side, side), torch.zeros(2, side, side)
    masks[0, 0:4, 0:4] = 1
    masks[1, 8:12, 8:12] = 1
    generator = torch.Generator().manual_seed(3)
    for _ in range(100):
        _, new_masks = replace_concepts(image, masks, generator)
        assert int((new_masks[1] > 0).sum()) == 16  # the last one pasted is never covered: whole, inside
        assert int((new_masks[0] > 0).sum()) >= 16 - 1  # covered by at most 10% of its area (1.6 px)



def test_replace_concepts_onto_the_scene_places_swaps_them():
    side = 16
    image = torch.linspace(-1, 1, side * side).reshape(1, side, side).expand(3, side, side).clone()
    masks = torch.zeros(2, side, side)
    masks[0, 2:5, 1:4] = 1  # a 3x3 block centred at (3, 2)
    masks[1, 10:12, 8:14] = 1  # a 2x6 bar centred at (10, 10)
    places = [box_centre(m) for m in masks]
    assert places == [(3, 2), (10, 10)]
    generator = torch.Generator().manual_seed(0)
    centres = set()
    for _ in range(20):
        new_image, new_masks = replace_concepts(image, masks, generator, places)
        found = [box_centre(m > 0) for m in new_masks]
        assert sorted(found) == sorted(places)  # each concept centred on one of the places, none shared
        centres.add(tuple(found))
        for j in range(2):
            kept = new_masks[j] > 0
            (y, x), (y0, x0) = kept.nonzero()[0].tolist(), (masks[j] > 0).nonzero()[0].tolist()
            assert torch.equal(new_image[:, kept], image.roll((y - y0, x - x0), dims=(1, 2))[:, kept])
    assert len(centres) == 2  # both orders drawn: kept, and swapped

def test_replaced_samples_are_drawn_anew_and_plain_ones_draw_as_before(tokenizer):
    plain = dataset(tokenizer, length=40)
    half = dataset(tokenizer, length=40, replace_p=0.5)
    replaced = [half[i]["latent_key"] is None for i in range(40)]
    assert 10 <= sum(replaced) <= 30
    assert [plain[i]["prompt"] for i in range(40)] == [half[i]["prompt"] for i in range(40)]
    off = dataset(tokenizer, length=40, replace_p=0.0, degrade_noise=0.0)
    assert all(torch.equal(plain[i]["pixel_values"], off[i]["pixel_values"]) for i in range(40))
    assert [plain[i]["noise_seed"] for i in range(40)] == [off[i]["noise_seed"] for i in range(40)]


def test_replacement_from_a_step_leaves_the_samples_before_it_as_the_method_draws_them(tokenizer):
    plain = dataset(tokenizer, length=40)
    half = dataset(tokenizer, length=40, replace_p=0.5, replace_full_loss=True)
    late = dataset(tokenizer, length=40, replace_p=0.5, replace_full_loss=True, replace_from=20)
    for i in range(40):
        same = plain[i] if i < 20 else half[i]
        assert torch.equal(late[i]["pixel_values"], same["pixel_values"])
        assert torch.equal(late[i]["loss_region"], same["loss_region"])
        assert late[i]["noise_seed"] == same["noise_seed"]
    assert sum(half[i]["latent_key"] is None for i in range(20)) > 0  # the first 20 would have had re-placements
    assert sum(late[i]["latent_key"] is None for i in range(20, 40)) > 0


def test_the_datamodule_counts_the_replacement_start_in_samples(tokenizer):
    settings = LoaderSettings(batch_size=2, replace_p=0.5, replace_full_loss=True, replace_from_step=3)
    module = UnionSamplingDataModule(asymmetric_scene(), [tokenizer], NAMES, [49408, 49409, 49410], total_steps=10,
                                     settings=settings, seed=1)
    batches = list(module.train_dataloader())
    assert module.dataset.replace_from == 6  # step 3 x 2 samples a step
    late = dataset(tokenizer, length=20, replace_p=0.5, replace_full_loss=True, replace_from=6)
    for step, batch in enumerate(batches):
        assert torch.equal(batch["pixel_values"], torch.stack([late[2 * step + j]["pixel_values"] for j in (0, 1)]))


def test_origin_loss_covers_the_moved_concepts_and_the_places_they_left(tokenizer):
    scene = asymmetric_scene()
    masked = dataset(tokenizer, length=40, flip_p=0.0, replace_p=0.5)
    origins = dataset(tokenizer, length=40, flip_p=0.0, replace_p=0.5, replace_origin_loss=True)
    replaced, grown = 0, 0
    for i in range(40):
        a, b = masked[i], origins[i]
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["masks"], b["masks"])
        if b["latent_key"] is None:
            replaced += 1
            left = scene.masks[b["token_ids"] - 49408].amax(dim=0, keepdim=True)
            assert torch.equal(b["loss_region"], torch.maximum(a["loss_region"], left))
            grown += bool((b["loss_region"] > a["loss_region"]).any())  # a concept moved: its old place counts
        else:
            assert torch.equal(b["loss_region"], a["loss_region"])
    assert replaced >= 10 and grown >= replaced // 2


def test_composites_on_the_photos_backdrop_colour(tokenizer):
    # outside the three masks: rows 2-5 x columns 2-7 and rows 6-7 x columns 2-4 of the ramp -1 .. 1 (step 2/7):
    # (4 x 12/7 + 2 x -3/7) / 30 pixels = 0.2
    assert torch.allclose(backdrop_colour(asymmetric_scene()), torch.full((3, 1, 1), 0.2), atol=1e-6)
    random_ = dataset(tokenizer, length=40, replace_p=0.5)
    photo = dataset(tokenizer, length=40, replace_p=0.5, replace_backdrop="photo")
    replaced = 0
    for i in range(40):
        item = photo[i]
        if item["latent_key"] is None:
            replaced += 1
            outside = item["masks"].amax(dim=0) == 0
            assert torch.allclose(item["pixel_values"][:, outside], torch.tensor(0.2), atol=1e-6)
            assert not torch.allclose(random_[i]["pixel_values"][:, outside], torch.tensor(0.2), atol=1e-2)
        else:
            assert torch.equal(item["pixel_values"], random_[i]["pixel_values"])
    assert replaced >= 10


def test_full_loss_covers_the_whole_picture_of_replaced_samples_only(tokenizer):
    masked = dataset(tokenizer, length=40, replace_p=0.5)
    whole = dataset(tokenizer, length=40, replace_p=0.5, replace_full_loss=True)
    for i in range(40):
        a, b = masked[i], whole[i]
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["masks"], b["masks"])
        union = a["masks"].amax(dim=0, keepdim=True)
        assert torch.equal(a["loss_region"], union)  # the masks' union, re-placed or not
        replaced = b["latent_key"] is None
        assert torch.equal(b["loss_region"], torch.ones_like(union) if replaced else union)
    batch = collate_union_samples([whole[i] for i in range(8)])
    assert torch.equal(batch["union_mask"], torch.stack([whole[i]["loss_region"] for i in range(8)]))
    # with degradation too, a sample learned whole keeps its plain colour; the others are degraded as before
    noisy = dataset(tokenizer, length=40, replace_p=0.5, replace_full_loss=True, degrade_noise=1.0)
    for i in range(40):
        learned_whole = bool(whole[i]["loss_region"].all())
        assert torch.equal(noisy[i]["pixel_values"], whole[i]["pixel_values"]) == learned_whole

def test_degradation_noises_outside_the_masks_and_fades_over_the_run(tokenizer):
    scene = asymmetric_scene()
    data = dataset(tokenizer, length=100, flip_p=0.0, degrade_noise=0.5, degrade_power=2.0)
    first, last = data[0], data[99]
    for item, strength in ((first, 0.5), (last, 0.5 * (1 - 99 / 100) ** 2)):
        inside = item["masks"].amax(dim=0) > 0
        assert torch.equal(item["pixel_values"][:, inside], scene.image[:, inside])
        change = (item["pixel_values"] - scene.image)[:, ~inside]
        assert 0 < float(change.abs().max()) <= 1e-6 + strength * 6  # clamped to [-1, 1], bounded by the std
        assert item["latent_key"] is None
    # a resumed run's sample at the same global index fades by the same amount (offset counts the steps done)
    resumed = dataset(tokenizer, 100, offset=50, scene=scene, flip_p=0.0, degrade_noise=0.5, degrade_power=2.0)
    assert torch.equal(resumed[49]["pixel_values"], last["pixel_values"])
