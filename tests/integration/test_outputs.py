"""Nothing lost: the run folder guard, output checks before any work, and one-line errors for what users do
to their files (through the real entry points, in-process, as test_bad_input does)."""

import os
import sys

import pytest

from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import train as train_cli
from tests.helpers import FAST


def call(main, monkeypatch, capsys, *argv) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["bas", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err


def train_args(scene_dir, tmp_path, *extra):
    return [*FAST, f"data.scene.folder={scene_dir}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]


def test_user_error_keeps_what_was_in_the_folder(tmp_path, scene_dir, monkeypatch, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    code, err = call(train_cli.main, monkeypatch, capsys,
                     *train_args(scene_dir, tmp_path, "data.scene.folder=nope", f"hydra.run.dir={keep}"))
    assert code == 2 and err.count("\n") == 1 and "scene folder 'nope' does not exist" in err
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]  # Hydra's .hydra/ and train.log removed


def test_user_error_in_the_working_directory_removes_only_hydras_files(tmp_path, scene_dir, monkeypatch, capsys):
    cwd = tmp_path / "project"
    (cwd / "src").mkdir(parents=True)
    (cwd / "README.md").write_text("mine")
    monkeypatch.chdir(cwd)
    code, _ = call(train_cli.main, monkeypatch, capsys,
                   *train_args(scene_dir, tmp_path, "data.initializer_words=[a,b,c]", "hydra.run.dir=."))
    assert code == 2
    assert sorted(p.name for p in cwd.iterdir()) == ["README.md", "src"]


def test_a_folder_holding_another_run_is_refused_unless_asked(tmp_path, scene_dir, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "pipeline").mkdir()
    (run / "pipeline" / "break_a_scene.json").write_text("{}")
    code, err = call(train_cli.main, monkeypatch, capsys, *train_args(scene_dir, tmp_path, f"hydra.run.dir={run}"))
    assert code == 2 and err == (f"error: '{run}' already holds another run (it has a .hydra/ folder); choose "
                                 f"another hydra.run.dir, or add overwrite=true to write into it anyway.\n")
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "pipeline"]
    # with overwrite=true a user error still removes only what this run added: nothing of the earlier run
    code, err = call(train_cli.main, monkeypatch, capsys,
                     *train_args(scene_dir, tmp_path, f"hydra.run.dir={run}", "overwrite=true",
                                 "data.initializer_words=[a,b,c]"))
    assert code == 2 and "3 words for 2 masks" in err
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "pipeline"]
    assert (run / "pipeline" / "break_a_scene.json").read_text() == "{}"


@pytest.mark.parametrize("setting,message", [
    ("hydra.run.dir={file}/run", "hydra.run.dir='{file}/run' cannot be a folder: '{file}' is a file"),
    ("callbacks.export.dirpath={file}/pipeline",
     "callbacks.export.dirpath='{file}/pipeline' cannot be a folder: '{file}' is a file"),
    ("callbacks.scene.dirpath={file}/visuals", "callbacks.scene.dirpath='{file}/visuals' cannot be a folder"),
    ("callbacks.export.dirpath={tmp}", "export target '{tmp}' exists and is not a Break-A-Scene export"),
    ("ckpt_path={tmp}/none.ckpt", "ckpt_path='{tmp}/none.ckpt' is not a file"),
], ids=["run_dir", "export", "visuals", "export_not_ours", "checkpoint"])
def test_outputs_are_checked_before_any_work(tmp_path, scene_dir, monkeypatch, capsys, setting, message):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    fill = {"file": blocker, "tmp": tmp_path}
    out = tmp_path / "out"
    code, err = call(train_cli.main, monkeypatch, capsys,
                     *train_args(scene_dir, tmp_path, f"hydra.run.dir={out}", setting.format(**fill)))
    assert code == 2 and message.format(**fill) in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "cache").exists()
    assert blocker.read_text() == "x"


@pytest.fixture
def exported(tmp_path):
    from break_a_scene.export import export_pipeline
    from break_a_scene.tokens import add_placeholder_tokens
    from tests.conftest import tiny_components

    parts = tiny_components()
    add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["<asset0>", "<asset1>"])
    return export_pipeline(parts, tmp_path / "train" / "pipeline", {"tokens": ["<asset0>", "<asset1>"],
                                                                    "resolution": 64})


def generate(monkeypatch, capsys, *argv):
    return call(generate_cli.main, monkeypatch, capsys, "generation.num_inference_steps=1",
                "generation.num_images_per_prompt=1", "generation.progress=false", *argv)


def test_generate_into_the_training_folder_is_refused_and_keeps_the_pipeline(tmp_path, exported, monkeypatch,
                                                                             capsys):
    (exported.parent / ".hydra").mkdir()
    before = sorted(p.name for p in exported.iterdir())
    code, err = generate(monkeypatch, capsys, f"pipeline={exported}", f"hydra.run.dir={exported.parent}",
                         "generation.prompts=[no token here]")
    assert code == 2 and "already holds another run" in err
    assert sorted(p.name for p in exported.iterdir()) == before


def _damage(case, pipeline):
    if case == "no_unet_weights":
        (pipeline / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    elif case == "truncated_weights":
        weights = pipeline / "unet" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif case == "broken_manifest":
        (pipeline / "break_a_scene.json").write_text('{"tokens": [')
    elif case == "no_model_index":
        (pipeline / "model_index.json").unlink()


@pytest.mark.parametrize("case,message", [
    ("no_pipeline", "pipeline is not set; give it on the command line (pipeline=...)"),
    ("unknown_token", "names <asset7>, which this pipeline did not learn; its tokens are <asset0>, <asset1>"),
    ("no_token", "uses none of the learned tokens"),
    ("no_unet_weights", "lacks the weights of its unet"),
    ("truncated_weights", "cannot be loaded (OSError: Unable to load weights from checkpoint file"),
    ("broken_manifest", "break_a_scene.json' is not valid JSON"),
    ("no_model_index", "model_index.json' is missing; "),
    ("unwritable_output", "hydra.run.dir='{file}/samples' cannot be a folder"),
])
def test_generate_failures_end_with_one_line(tmp_path, exported, monkeypatch, capsys, case, message):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path / "samples"
    argv = [f"pipeline={exported}", f"hydra.run.dir={out}", "generation.prompts=['a photo of <asset0>']"]
    if case == "no_pipeline":
        argv = argv[1:]
    elif case == "unknown_token":
        argv[-1] = "generation.prompts=['a photo of <asset0> and <asset7>']"
    elif case == "no_token":
        argv[-1] = "generation.prompts=['a photo']"
    elif case == "unwritable_output":
        argv[1] = f"hydra.run.dir={blocker}/samples"
    _damage(case, exported)
    code, err = generate(monkeypatch, capsys, *argv)
    assert code == 2 and message.format(file=blocker) in err and err.count("\n") == 1
    assert not out.exists()
    if case == "broken_manifest":
        assert (exported / "break_a_scene.json").read_text() == '{"tokens": ['


def test_exported_files_are_readable_like_the_rest(exported):
    modes = {path.relative_to(exported).as_posix(): path.stat().st_mode & 0o777
             for path in exported.rglob("*") if path.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}  # safetensors' own files included (it writes them 0600)
