import pytest

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.prompts import PAPER_TEMPLATES, prompt_set, read_templates


def test_paper_prompt_set_is_every_template_times_every_subset():
    prompts = prompt_set(["<a>", "<b>"], ["cat", "apple"])
    assert len(PAPER_TEMPLATES) == 10
    assert len(prompts) == 30  # 3 non-empty subsets x 10 templates
    assert prompts[0].prompt == "a photo of <a> at the beach"
    assert prompts[0].class_prompt == "a photo of a cat at the beach"
    assert prompts[0].concepts == (0,)
    both = [p for p in prompts if p.concepts == (0, 1)]
    assert len(both) == 10
    assert both[9].prompt == "a photo of <a> and <b> floating on top of water"
    assert both[9].class_prompt == "a photo of a cat and an apple floating on top of water"


def test_max_concepts_and_three_tokens():
    assert len(prompt_set(["<a>", "<b>", "<c>"], ["x", "y", "z"])) == 70
    assert len(prompt_set(["<a>", "<b>", "<c>"], ["x", "y", "z"], max_concepts=1)) == 30


def test_user_template_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# mine\n\na watercolor of {}\n{} on the moon\n")
    assert read_templates(path) == ("a watercolor of {}", "{} on the moon")
    assert [p.prompt for p in prompt_set(["<a>"], ["dog"], read_templates(path))] == [
        "a watercolor of <a>", "<a> on the moon"]
    path.write_text("a watercolor\n")
    with pytest.raises(UserInputError, match=r"prompts.txt:1: a template needs exactly one"):
        read_templates(path)
    with pytest.raises(UserInputError, match="does not exist"):
        read_templates(tmp_path / "missing.txt")


def test_class_names_must_match_tokens():
    with pytest.raises(UserInputError, match="2 tokens but 1 class names"):
        prompt_set(["<a>", "<b>"], ["cat"])
