"""Every user error of bas-edit, bas-generate, bas-evaluate and bas-aggregate ends in one line naming the file
or setting and the fix, exit status 2, before any work and with nothing of an earlier run changed (bas-train's
own cases are in test_bad_input.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from break_a_scene.cli import aggregate as aggregate_cli
from break_a_scene.cli import edit as edit_cli
from break_a_scene.cli import evaluate as evaluate_cli
from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import train as train_cli
from break_a_scene.evaluation.benchmark_sets import register_resolvers
from tests.evaluation.encoders_tiny import save_tiny_clip, save_tiny_dino
from tests.helpers import FAST, assert_one_line, header_only_png, run_entry

register_resolvers()
README_PROMPT = "prompt='a photo of <asset0> on a table'"  # the README's, as the shell hands it over


@pytest.fixture
def photo(tmp_path):
    """A 64 px picture and a region mask in its middle."""
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(tmp_path / "room.png")
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(tmp_path / "region.png")
    return tmp_path / "room.png", tmp_path / "region.png"


def _edit(tiny_export, image, mask, out, *extra):
    return [f"pipeline={tiny_export}", f"image={image}", f"mask={mask}", f"hydra.run.dir={out}",
            "edit.num_images=1", "edit.num_inference_steps=2", "edit.device=cpu", "edit.progress=false", *extra]


def test_the_readme_edit_command_runs(tiny_export, photo, tmp_path, capsys):
    out = tmp_path / "edited"
    code, err = run_entry(edit_cli.main, _edit(tiny_export, *photo, out, README_PROMPT), capsys)
    assert code == 0, err[-2000:]
    assert json.loads((out / "edit.json").read_text())["prompt"] == "a photo of <asset0> on a table"


@pytest.mark.parametrize("case", ["huge_image", "missing_image", "empty_mask", "full_mask", "unquoted_prompt"])
def test_edit_errors_name_its_own_settings(case, tiny_export, photo, tmp_path, capsys):
    image, mask = photo
    prompt = README_PROMPT
    expected = {
        "huge_image": "over the limit of 100 MP",
        "missing_image": "does not exist. Check image.",
        "empty_mask": "is empty (read from its grey channel; edit.mask_channel reads another)",
        "full_mask": "covers the whole image (read from its grey channel; edit.mask_channel reads another); a mask "
                     "must leave some of it out. To draw a whole new image, use bas-generate.",
        "unquoted_prompt": "cannot read the override 'prompt=a photo of <asset0> on a table'",
    }[case]
    if case == "huge_image":
        image = header_only_png(tmp_path / "huge.png", 20000, 20000)
    elif case == "missing_image":
        image = tmp_path / "nope.png"
    elif case in ("empty_mask", "full_mask"):
        Image.new("L", (64, 64), 0 if case == "empty_mask" else 255).save(mask)
    else:
        prompt = "prompt=a photo of <asset0> on a table"  # the README's line before it was quoted for Hydra
    out = tmp_path / "edited"
    code, err = run_entry(edit_cli.main, _edit(tiny_export, image, mask, out, prompt), capsys)
    assert code == 2
    assert_one_line(err, expected)
    assert "data." not in err  # training's settings mean nothing to bas-edit
    assert not out.exists()


@pytest.mark.parametrize("damage,expected", [
    (lambda m: m.pop("tokens"), 'lacks a valid "tokens" (the learned token names)'),
    (lambda m: m.update(resolution="big"), 'lacks a valid "resolution"'),
    (None, "is not valid JSON"),
])
def test_generate_names_a_damaged_manifest(damage, expected, tiny_export, tmp_path, capsys):
    pipeline = shutil.copytree(tiny_export, tmp_path / "pipeline")
    manifest_file = pipeline / "break_a_scene.json"
    if damage is None:
        manifest_file.write_text('{"tokens": ["<asset0>"')
    else:
        manifest = json.loads(manifest_file.read_text())
        damage(manifest)
        manifest_file.write_text(json.dumps(manifest))
    out = tmp_path / "samples"
    code, err = run_entry(generate_cli.main, [f"pipeline={pipeline}", f"hydra.run.dir={out}"], capsys)
    assert code == 2
    assert_one_line(err, str(manifest_file), expected)
    assert not out.exists()


@pytest.fixture
def paper_trial(tmp_path, scene_dir):
    """bas-evaluate's overrides for one paper-world trial on the tiny model, with tiny encoders on disk."""
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of {} in the snow\n")
    return [
        *[o for o in FAST if not o.startswith("callbacks.")], "evaluation/segmenter=attention",
        f"data.scene.folder={scene_dir}", f"evaluation.prompts.templates={templates}",
        f"evaluation.clip.model_name=local-dir:{save_tiny_clip(tmp_path / 'clip')}", "evaluation.clip.pretrained=null",
        f"evaluation.dino.name_or_path={save_tiny_dino(tmp_path / 'dino')}", "evaluation.num_images_per_prompt=1",
        "evaluation.num_inference_steps=2", "evaluation.progress=false", f"evaluation.out_dir={tmp_path / 'eval'}",
    ]


@pytest.mark.parametrize("case", ["no_classes", "empty_templates", "missing_clip", "missing_dino", "missing_dreamsim",
                                  "unknown_choice"])
def test_a_single_trial_stops_on_a_user_error_before_training(case, paper_trial, scene_dir, tmp_path, capsys):
    extra, expected = {
        "no_classes": ([], "has no classes.txt with one class name per mask"),
        "empty_templates": ([], "has no templates"),
        "missing_clip": (["evaluation.clip.model_name=local-dir:/nowhere/clip"],
                         "evaluation.clip.model_name=local-dir:/nowhere/clip: no such folder"),
        "missing_dino": (["evaluation.dino.name_or_path=nobody/no-dino"],
                         "or point evaluation.dino.name_or_path at a local folder"),
        "missing_dreamsim": ([f"evaluation.dreamsim.cache_dir={tmp_path / 'no_dreamsim'}"],
                             "evaluation.dreamsim=null leaves the DreamSim columns out."),
        "unknown_choice": (["memory=bogus"], "choose one of 12gb, 16gb, 24gb, full, lora_bf16, qlora_nf4."),
    }[case]
    if case != "missing_dreamsim":  # the successors' metrics need weights no tiny model stands in for
        extra += ["evaluation.dreamsim=null", "evaluation.detector=null"]
    if case == "no_classes":
        (scene_dir / "classes.txt").unlink()
    if case == "empty_templates":
        (tmp_path / "templates.txt").write_text("# nothing but a comment\n")
    code, err = run_entry(evaluate_cli.main, [*paper_trial, *extra], capsys)
    assert code == 2
    assert_one_line(err, expected)
    assert not (tmp_path / "eval").exists()  # no trial folder: nothing trained, nothing recorded



def test_a_trial_another_runner_holds_is_left_to_it(paper_trial, scene_dir, tmp_path, capsys):
    """A single trial stops in one line; a sweep skips it and records nothing; the holder's lock stays."""
    trial = tmp_path / "eval" / "break_a_scene" / scene_dir.name / "seed_0"
    trial.mkdir(parents=True)
    lock = trial / ".running"
    lock.write_text("pid 4242 on node17 since 2026-12-03 09:00:00\n")
    args = [*paper_trial, "evaluation.dreamsim=null", "evaluation.detector=null"]
    code, err = run_entry(evaluate_cli.main, args, capsys)
    assert code == 2
    assert_one_line(err, f"is held by another runner (pid 4242 on node17 since 2026-12-03 09:00:00); wait for it, "
                         f"or delete {lock} if no runner is working on it")
    code, err = run_entry(evaluate_cli.main, ["-m", *args], capsys)
    assert code == 0
    assert not {"failed.json", "pipeline", "rows.csv"} & {p.name for p in trial.iterdir()}  # Hydra's own files aside
    assert "skipped: trial" in (trial / "evaluate.log").read_text()
    assert lock.read_text().startswith("pid 4242")

def test_aggregate_names_a_damaged_rows_file(tmp_path, capsys):
    trial = tmp_path / "eval" / "break_a_scene" / "scene_000" / "seed_0"
    trial.mkdir(parents=True)
    header = "method,scene,train_seed,prompt,class_prompt,tokens,concepts,sample_seed,image,identity\n"
    (trial / "rows.csv").write_text(header + "break_a_scene,scene_000,0,p,c,<asset0>,1,0,,0.5\n"
                                    "break_a_scene,scene_000,0,p,c,<asset0>,1,1,,0.5,")
    with pytest.raises(SystemExit) as exit_info:
        aggregate_cli.main([str(tmp_path / "eval")])
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, f"'{trial / 'rows.csv'}', line 3, does not have one value per column")
    assert not (tmp_path / "eval" / "aggregate").exists()


def test_a_failed_overwrite_leaves_the_earlier_run_as_it_was(scene_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}"], capsys)
    assert code == 0, err[-2000:]
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert {".hydra/config.yaml", "train.log"} <= {str(path) for path in before}
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}",
                                           "overwrite=true", "data.resolution=60"], capsys)
    assert code == 2
    assert_one_line(err, "data.resolution=60 cannot be taken")
    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before  # its record (.hydra/), its log and its export, byte for byte


def test_a_sweep_job_that_stops_on_a_user_error_removes_only_its_own_folder(scene_dir, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "notes.txt").write_text("mine")
    code, err = run_entry(train_cli.main, ["-m", *FAST, f"data.scene.folder={scene_dir}", f"hydra.sweep.dir={sweep}",
                                           "data.resolution=60"], capsys)
    assert code == 2
    assert_one_line(err, "data.resolution=60 cannot be taken")
    assert (sweep / "notes.txt").read_text() == "mine" and not (sweep / "0").exists()
