import csv
import json

import pytest

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.aggregate import aggregate, by_concepts, load_rows, pareto_front, summarize

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
