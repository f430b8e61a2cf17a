import pytest

from break_a_scene.evaluation.stats import mean_ci
from break_a_scene.evaluation.toy import toy_library_prompt_set
from break_a_scene.toyworld.benchmark import benchmark_prompts, library_prompts, parse_prompt, score_reading
from break_a_scene.toyworld.judges import Reading
from break_a_scene.toyworld.world import ToyObject, ToyScene

SCENE = ToyScene((ToyObject("star", "orange", "left"), ToyObject("ring", "blue", "right")), "teal")


def test_prompts_cover_every_subset_in_new_contexts():
    prompts = benchmark_prompts(SCENE, ["<asset0>", "<asset1>"], per_subset=2, seed=0)
    assert len(prompts) == 2 * 3  # {0}, {1}, {0, 1}
    assert {p.tokens for p in prompts if len(p.tokens) == 1} == {("<asset0>",), ("<asset1>",)}
    assert {frozenset(p.tokens) for p in prompts if len(p.tokens) == 2} == {frozenset({"<asset0>", "<asset1>"})}
    for prompt in prompts:
        assert prompt.background != "teal" and prompt.prompt.endswith(f"on a {prompt.background} background")
        for token, obj in zip(prompt.tokens, prompt.objects):
            where = "in the middle" if obj.slot == "middle" else f"on the {obj.slot}"
            assert f"{token} {where}" in prompt.prompt
            assert (obj.colour, obj.shape) == {"<asset0>": ("orange", "star"), "<asset1>": ("blue", "ring")}[token]


CROSS = ToyScene((ToyObject("ring", "blue", "middle"), ToyObject("cross", "green", "left")), "navy")


def test_library_prompts_pair_concepts_across_pictures():
    """Each concept alone once per token, then one concept from each picture; the blue ring both pictures show is
    one token in a joint run (never paired with itself) and two in composed assets (still never paired: one
    object)."""
    joint = library_prompts([SCENE, CROSS], [["<a0>", "<a1>"], ["<a1>", "<a2>"]], per_subset=2, seed=0)
    alone = [p.tokens for p in joint if len(p.tokens) == 1]
    assert sorted(alone) == [("<a0>",)] * 2 + [("<a1>",)] * 2 + [("<a2>",)] * 2
    cross = {frozenset(p.tokens) for p in joint if len(p.tokens) == 2}
    assert cross == {frozenset({"<a0>", "<a1>"}), frozenset({"<a0>", "<a2>"}), frozenset({"<a1>", "<a2>"})}
    assert len(joint) == 2 * (3 + 3)
    for prompt in joint:
        assert prompt.background not in {"teal", "navy"}
        assert len({obj.slot for obj in prompt.objects}) == len(prompt.tokens)
        assert set(prompt.scene_objects) == set(SCENE.objects) | set(CROSS.objects)
    composed = library_prompts([SCENE, CROSS], [["<1:a0>", "<1:a1>"], ["<2:a0>", "<2:a1>"]], per_subset=1)
    assert sorted(p.tokens for p in composed if len(p.tokens) == 1) == [("<1:a0>",), ("<1:a1>",), ("<2:a0>",),
                                                                      ("<2:a1>",)]
    assert {frozenset(p.tokens) for p in composed if len(p.tokens) == 2} == {
        frozenset({"<1:a0>", "<2:a0>"}), frozenset({"<1:a0>", "<2:a1>"}), frozenset({"<1:a1>", "<2:a1>"})}
    evals = toy_library_prompt_set([SCENE, CROSS], [["<a0>", "<a1>"], ["<a1>", "<a2>"]], per_subset=1)
    pair = next(e for e in evals if set(e.target.tokens) == {"<a0>", "<a2>"})
    assert sorted(pair.concepts) == [0, 2]  # indexes into <a0>, <a1>, <a2>
    assert "a orange star" in pair.class_prompt and "a green cross" in pair.class_prompt


def test_scores_by_hand():
    prompts = benchmark_prompts(SCENE, ["<asset0>", "<asset1>"], per_subset=1, seed=0)
    pair = next(p for p in prompts if len(p.tokens) == 2)
    star = next(o for o in pair.objects if o.shape == "star")
    ring = next(o for o in pair.objects if o.shape == "ring")
    empty = {"left": None, "middle": None, "right": None}
    # the star where asked, the ring in the wrong slot, right background
    wrong = next(s for s in ("left", "middle", "right") if s not in (star.slot, ring.slot))
    reading = Reading(pair.background, {**empty, star.slot: ("orange", "star"), wrong: ("blue", "ring")})
    assert pair.prompt == "a photo of <asset1> in the middle and <asset0> on the right on a navy background"
    assert score_reading(pair, reading) == {"identity": 1.0, "position": 0.5, "background": 1.0,
                                            "prompt_following": 0.75, "all_correct": 0.0,
                                            "extra_objects": 0.0, "mixed": 0.0,
                                            # the ring on the left: prompted, neither where asked nor trained
                                            "stray_training_slot": 0.0, "stray_elsewhere": 1.0,
                                            "stray_unprompted": 0.0, "stray_other": 0.0}
    reading = Reading("black", {**empty, star.slot: ("orange", "circle")})
    assert score_reading(pair, reading) == {"identity": 0.0, "position": 0.0, "background": 0.0,
                                            "prompt_following": 0.0, "all_correct": 0.0,
                                            "extra_objects": 0.0, "mixed": 0.0,  # a circle is no scene shape
                                            "stray_training_slot": 0.0, "stray_elsewhere": 0.0,
                                            "stray_unprompted": 0.0, "stray_other": 1.0}


def test_entanglement_readings_by_hand():
    """The ring's prompt: the star leaking in is an extra object; a blue star mixes the two concepts."""
    prompts = benchmark_prompts(SCENE, ["<asset0>", "<asset1>"], per_subset=1, seed=0)
    ring_alone = next(p for p in prompts if p.tokens == ("<asset1>",))
    slot = ring_alone.objects[0].slot
    other = next(s for s in ("left", "middle", "right") if s != slot)
    empty = {"left": None, "middle": None, "right": None}
    leaked = Reading(ring_alone.background, {**empty, slot: ("blue", "ring"), other: ("orange", "star")})
    scores = score_reading(ring_alone, leaked)
    assert (scores["all_correct"], scores["extra_objects"], scores["mixed"]) == (1.0, 1.0, 0.0)
    assert (scores["stray_unprompted"], scores["stray_training_slot"] + scores["stray_elsewhere"]) == (1.0, 0.0)
    swapped = Reading(ring_alone.background, {**empty, slot: ("blue", "star")})
    scores = score_reading(ring_alone, swapped)
    assert (scores["identity"], scores["extra_objects"], scores["mixed"]) == (0.0, 0.0, 1.0)


def test_mean_ci():
    mean, low, high = mean_ci([0.0, 1.0] * 20)
    assert mean == 0.5 and 0.33 < low < 0.5 < high < 0.67
    assert mean_ci([0.3] * 5) == (0.3, 0.3, 0.3)


def test_parse_prompt_reads_slots_objects_and_background():
    tokens = ["<asset0>", "<asset1>"]
    parsed = parse_prompt("a photo of <asset1> in the middle and <asset0> on the right on an navy background",
                          SCENE, tokens)
    assert parsed.tokens == ("<asset1>", "<asset0>") and parsed.background == "navy"
    assert parsed.objects == (ToyObject("ring", "blue", "middle"), ToyObject("star", "orange", "right"))
    # the benchmark's own prompts parse back to themselves
    for prompt in benchmark_prompts(SCENE, tokens, per_subset=2, seed=3):
        assert parse_prompt(prompt.prompt, SCENE, tokens) == prompt
    for bad in ("a photo of <asset0> on a navy background", "a photo of <asset0> on the left",
                "a photo of <asset0> on the left and <asset1> on a navy background",
                "a photo of <asset0> on the left on a pink background"):
        with pytest.raises(ValueError, match="does not say where each token goes"):
            parse_prompt(bad, SCENE, tokens)
