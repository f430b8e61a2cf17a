import csv
import json
from pathlib import Path

import pytest

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.aggregate import (
    aggregate,
    by_concepts,
    load_rows,
    paired_differences,
    pareto_front,
    summarize,
)
from break_a_scene.evaluation.stats import paired_difference

REPO = Path(__file__).resolve().parents[2]
FIELDS = ["method", "scene", "train_seed", "prompt", "class_prompt", "tokens", "concepts", "sample_seed", "image",
          "identity", "prompt_following"]


def _write_trial(root, method, scene, values):
    trial = root / method / scene / "seed_0"
    trial.mkdir(parents=True)
    with (trial / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for n, (concepts, identity, following) in enumerate(values):
            writer.writerow({"method": method, "scene": scene, "train_seed": 0, "prompt": f"p{n}", "class_prompt": "",
                             "tokens": "", "concepts": concepts, "sample_seed": n, "image": "",
                             "identity": identity, "prompt_following": following})


def test_table_units_breakdown_front_and_files(tmp_path):
    _write_trial(tmp_path, "a", "s0", [(1, 1.0, 0.0), (2, 0.0, 0.0)])  # unit means: identity 0.5
    _write_trial(tmp_path, "a", "s1", [(1, 1.0, 0.5), (1, 1.0, 0.5)])  # 1.0
    _write_trial(tmp_path, "b", "s0", [(1, 0.2, 1.0), (2, 0.2, 1.0)])
    (tmp_path / "b" / "s1" / "seed_0").mkdir(parents=True)
    (tmp_path / "b" / "s1" / "seed_0" / "failed.json").write_text(json.dumps(
        {"method": "b", "scene": "/x/s1", "train_seed": 0, "error": "RuntimeError: boom"}))
    rows = load_rows(tmp_path)
    table = summarize(rows, ["identity", "prompt_following"])
    assert table["a"]["images"] == 4 and table["a"]["units"] == 2
    mean, low, high = table["a"]["identity"]
    assert mean == pytest.approx(0.75) and 0.5 <= low <= mean <= high <= 1.0
    assert table["b"]["identity"] == pytest.approx((0.2, 0.2, 0.2))
    two = by_concepts(rows, ["identity"])[2]
    assert two["a"]["identity"][0] == 0.0 and two["a"]["images"] == 1

    report = aggregate(tmp_path)
    summary = json.loads((report / "table.json").read_text())
    assert summary["x"] == "prompt_following" and summary["y"] == "identity"
    assert summary["pareto_front"] == ["a", "b"]  # a: more identity, b: more prompt following
    assert summary["failed_trials"] == 1
    text = (report / "table.md").read_text()
    assert "| a | 4 | 2 | 0.750" in text and "b / s1 / seed 0: RuntimeError: boom" in text
    assert (report / "figure.png").stat().st_size > 1000
    assert "## 2 concepts in the prompt" in (report / "by_concepts.md").read_text()


def test_pareto_front():
    points = {"tim": (0.20, 0.40), "dbm": (0.14, 0.80), "ours": (0.18, 0.70), "bad": (0.15, 0.50)}
    assert pareto_front(points) == ["tim", "dbm", "ours"]


def test_no_rows_is_a_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="no rows.csv under"):
        aggregate(tmp_path)


def test_paired_difference_pairs_by_unit_and_removes_shared_variation(tmp_path):
    # scene difficulty varies a lot (0.1 ... 0.9) but "b" is always exactly 0.1 above "a": the paired interval
    # is the point +0.1, while the separate intervals of the two means overlap
    for n, base in enumerate([0.1, 0.5, 0.9]):
        _write_trial(tmp_path, "break_a_scene", f"s{n}", [(1, base, 0.5)])
        _write_trial(tmp_path, "b", f"s{n}", [(1, base + 0.1, 0.5)])
    _write_trial(tmp_path, "b", "s3", [(1, 1.0, 0.5)])  # no partner: left out of the pairs
    rows = load_rows(tmp_path)
    differences = paired_differences(rows, "break_a_scene", ["identity", "prompt_following"])
    mean, low, high, pairs = differences["b"]["identity"]
    assert pairs == 3 and mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    assert differences["b"]["prompt_following"][:3] == pytest.approx((0.0, 0.0, 0.0))
    table = summarize([r for r in rows if r["scene"] != "s3"], ["identity"])
    assert table["b"]["identity"][1] < table["break_a_scene"]["identity"][2]  # separate intervals overlap
    report = aggregate(tmp_path)
    assert "| b | 3 | +0.100 [+0.100, +0.100] | +0.000 [+0.000, +0.000] |" in (report / "paired.md").read_text()
    aggregate(tmp_path, reference="b")  # the other way round: another reference method
    assert "| break_a_scene | 3 | -0.100 [-0.100, -0.100] |" in (report / "paired.md").read_text()
    with pytest.raises(UserInputError, match=r"method 'c' is not in the rows; they have \['b', 'break_a_scene'\]"):
        aggregate(tmp_path, reference="c")


def test_paired_difference_interval():
    low_high = paired_difference({1: 0.0, 2: 0.0, 3: 0.0, 4: float("nan")}, {1: 0.0, 2: 1.0, 3: 0.5, 4: 1.0})
    mean, low, high, pairs = low_high
    assert pairs == 3 and mean == pytest.approx(0.5) and 0.0 <= low < 0.5 < high <= 1.0


def test_ablation_directions_verdicts_from_paired_differences(tmp_path):
    import subprocess
    import sys

    for n, base in enumerate([0.2, 0.5, 0.8]):
        _write_trial(tmp_path, "break_a_scene", f"s{n}", [(2, base, 0.6)])
        _write_trial(tmp_path, "no_union_sampling", f"s{n}", [(2, base - 0.1, 0.6)])  # paper's way every time
        _write_trial(tmp_path, "no_phase1", f"s{n}", [(1, base, 0.7)])  # better prompt following: reversed
        _write_trial(tmp_path, "no_masked_loss", f"s{n}", [(1, base, 0.6 + (n - 1) * 0.1)])  # +0.1, 0, -0.1
    done = subprocess.run([sys.executable, "experiments/toyworld/directions.py", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "directions.md").read_text()
    assert "identity_multi: break_a_scene - no_union_sampling = +0.100 [+0.100, +0.100] over 3 (scene, seed) " \
           "pairs: reproduces" in text
    assert "prompt_following: break_a_scene - no_phase1 = -0.100 [-0.100, -0.100] over 3 (scene, seed) " \
           "pairs: reversed" in text
    assert "break_a_scene - no_masked_loss = +0.000" in text and text.count("undecided") == 1
    assert "- break_a_scene - no_phase1, prompts with 2+ tokens: no pairs" in text  # its rows are 1-token prompts


def test_closer_look_on_multi_token_prompts_and_three_object_scenes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("directions", REPO / "experiments/toyworld/directions.py")
    directions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(directions)
    rows = []
    for method, extra, identity in [("break_a_scene", 0.0, 1.0), ("no_union_sampling", 1.0, 0.5)]:
        for scene, concepts in [("two", (1, 2)), ("three", (1, 2, 3))]:
            for k in concepts:  # the 1-token prompts (extra objects 0.5 everywhere) are left out of the look
                rows.append({"method": method, "scene": scene, "train_seed": "0", "concepts": str(k),
                             "identity": str(identity if k > 1 else 0.0),
                             "extra_objects": str(extra if k > 1 else 0.5)})
    line = directions.closer_look(rows, "no_union_sampling")
    assert line == ("- break_a_scene - no_union_sampling, prompts with 2+ tokens: extra_objects -1.000 "
                    "[-1.000, -1.000] (2); identity on 3-object scenes +0.500 [+0.500, +0.500] (1)")


def test_labels_of_coinciding_methods_do_not_overlap():
    from break_a_scene.evaluation.aggregate import label_offsets

    # markers on the page, in points: db_m and no_masked_loss at the same height, 24 pt apart; "db_m" is 25 pt wide
    points = {"db_m": (100.0, 150.0), "no_masked_loss": (124.0, 150.0), "ti_m": (200.0, 90.0), "far": (300.0, 250.0)}
    widths = {"db_m": 25.0, "no_masked_loss": 70.0, "ti_m": 22.0, "far": 15.0}
    assert label_offsets(points, widths) == {"far": 5, "db_m": 5, "no_masked_loss": -6, "ti_m": 5}  # a line down
    points["no_masked_loss"] = (130.0, 150.0)  # 5 pt clear of db_m's label: stays above its marker
    assert label_offsets(points, widths)["no_masked_loss"] == 5


def test_paper_columns_are_named_as_the_successors_name_them(tmp_path):
    fields = [*FIELDS[:9], "prompt_similarity", "identity_similarity", "dreamsim", "detect_compare"]
    trial = tmp_path / "break_a_scene" / "s0" / "seed_0"
    trial.mkdir(parents=True)
    with (trial / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerow(dict(zip(fields, ["break_a_scene", "s0", 0, "p", "c", "", 1, 0, "", 0.3, 0.6, 0.5, 0.4])))
    text = (aggregate(tmp_path) / "table.md").read_text()
    assert ("As the successors (DreamBooth, MagicTailor, MuDI) name them: prompt_similarity = CLIP-T; "
            "identity_similarity = DINO-I; dreamsim = DreamSim; detect_compare = D&C-DS.") in text
    assert "| break_a_scene | 1 | 1 | 0.300" in text


def _write_split_trial(root, method, scene, split):
    trial = root / method / scene / "seed_0"
    trial.mkdir(parents=True)
    with (trial / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", *FIELDS])
        writer.writeheader()
        writer.writerow({"method": method, "split": split, "scene": scene, "train_seed": 0, "prompt": "p",
                         "class_prompt": "", "tokens": "", "concepts": 1, "sample_seed": 0, "image": "",
                         "identity": 1.0, "prompt_following": 0.5})


def test_every_table_says_its_split_and_splits_are_not_mixed(tmp_path):
    test = tmp_path / "test"
    for scene in ("scene_000", "scene_001"):
        _write_split_trial(test, "break_a_scene", scene, "test")
    report = aggregate(test)
    first = "Split: test (2 scenes, 2 (scene, training seed) units)"
    assert (report / "table.md").read_text().splitlines()[0] == first
    assert (report / "by_concepts.md").read_text().splitlines()[0] == first
    assert json.loads((report / "table.json").read_text())["split"] == "test"

    _write_split_trial(test, "no_masked_loss", "scene_000", "dev")
    with pytest.raises(UserInputError, match="come from the splits dev, test; aggregate each split's trials alone"):
        aggregate(test)


def test_rows_from_before_splits_take_their_folders_split(tmp_path):
    _write_trial(tmp_path, "a", "s0", [(1, 1.0, 0.0)])
    assert (aggregate(tmp_path) / "table.md").read_text().startswith("Split: unlabelled (1 scenes")
    (tmp_path / "split.json").write_text(json.dumps({"split": "dev"}))
    assert (aggregate(tmp_path) / "table.md").read_text().startswith("Split: dev (1 scenes")


def test_the_committed_toy_results_are_the_dev_split():
    results = REPO / "experiments" / "toyworld" / "results"
    for folder in ("toyworld_ablations", "toyworld_mmdit_ablations"):
        assert json.loads((results / folder / "split.json").read_text())["split"] == "dev"


def _write_rows(root, method, scene, rows):
    """rows: (concepts, all_correct, identity, extra_objects) per image."""
    trial = root / method / scene / "seed_0"
    trial.mkdir(parents=True)
    with (trial / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", *FIELDS[:9], "all_correct", "identity", "extra_objects"])
        writer.writeheader()
        for n, (concepts, right, identity, extra) in enumerate(rows):
            writer.writerow({"method": method, "split": "dev", "scene": scene, "train_seed": 0, "prompt": f"p{n}",
                             "class_prompt": "", "tokens": "", "concepts": concepts, "sample_seed": n, "image": "",
                             "all_correct": right, "identity": identity, "extra_objects": extra})


def test_library_verdicts_pair_cross_prompts_with_the_one_scene_method(tmp_path):
    """By hand: Break-A-Scene's own two-concept prompts are all right 0.5 on a, 0 on b (pair a+b: 0.25), 1 on c and
    d (pair c+d: 1); its one- and three-concept prompts do not count. The joint run gets every cross prompt right
    (+0.75 and 0 against them: mean +0.375); against the composed assets (0 on a+b, 1 on c+d) +0.5."""
    import subprocess
    import sys

    single, library = tmp_path / "single", tmp_path / "library"
    _write_rows(single, "break_a_scene", "a", [(2, 1, 1, 0), (2, 0, 1, 0), (1, 1, 1, 0), (3, 1, 1, 0)])
    _write_rows(single, "break_a_scene", "b", [(2, 0, 1, 0), (1, 1, 1, 1)])
    _write_rows(single, "break_a_scene", "c", [(2, 1, 1, 0)])
    _write_rows(single, "break_a_scene", "d", [(2, 1, 1, 0)])
    for pair, composed_right in (("a+b", 0), ("c+d", 1)):
        _write_rows(library, "joint", pair, [(2, 1, 1.0, 1), (1, 1, 1.0, 0)])
        _write_rows(library, "composed_lora", pair, [(2, composed_right, 0.5, 0), (1, 1, 0.75, 0)])
    done = subprocess.run([sys.executable, "experiments/toyworld/library_verdicts.py", str(library), str(single)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    text = (library / "library_verdicts.md").read_text()
    assert text.splitlines()[0] == "Split: dev (2 scenes, 2 (scene, training seed) units)"
    assert "| break_a_scene, its own two-concept prompts | 0.625 [0.250, 1.000] |" in text
    assert "- joint cross all_correct - break_a_scene within-picture: +0.375 [+0.000, +0.750] (2)" in text
    assert "- composed_lora cross all_correct - break_a_scene within-picture: -0.125 [-0.250, +0.000] (2)" in text
    assert ("- joint - composed_lora: cross all_correct +0.500 [+0.000, +1.000] (2); cross identity +0.500 [+0.500, "
            "+0.500] (2); cross extra_objects +1.000 [+1.000, +1.000] (2); identity alone +0.250 [+0.250, +0.250] (2)"
            ) in text
