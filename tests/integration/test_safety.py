"""Nothing a user hands over runs as code: a model folder that names a module of its own, a checkpoint or a
VAE stage that holds a pickled payload. Each is refused through the real entry point with one line, and the
planted code never runs (it would leave a marker file)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import pretrain as pretrain_cli
from break_a_scene.cli import train as train_cli
from tests.conftest import tiny_components
from tests.helpers import FAST, assert_one_line, run_entry

PLANTED = "bas_planted_payload"


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """An importable module that leaves a marker file when it is imported; the marker's path is returned."""
    marker = tmp_path / "payload_ran"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{PLANTED}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(code))
    yield marker
    sys.modules.pop(PLANTED, None)


class Payload:
    """Pickles as a call that leaves the marker file (what a planted checkpoint would do instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny model saved as a diffusers pipeline folder, as SD 2.1 sits in a user's cache."""
    return tiny_components().save_pipeline(tmp_path_factory.mktemp("model") / "tiny_sd")


def _plant_entry(folder, part, spec):
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text())
    index[part] = spec
    index_file.write_text(json.dumps(index))


@pytest.mark.parametrize("part", ["extra", "vae"])
def test_training_refuses_a_model_folder_that_names_its_own_module(part, planted, saved_model, scene_dir, tmp_path,
                                                                   capsys):
    model = shutil.copytree(saved_model, tmp_path / "model")
    _plant_entry(model, part, [PLANTED, "Thing"])
    out = tmp_path / "run"
    code, err = run_entry(train_cli.main, [*FAST, "model=sd21_base", f"model.components.pretrained_model_name_or_path"
                                           f"={model}", f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}"],
                          capsys)
    assert code == 2
    assert_one_line(err, str(model / "model_index.json"), f"'{part}'", PLANTED)
    assert not planted.exists() and PLANTED not in sys.modules
    assert not out.exists()


@pytest.mark.parametrize("spec", [[PLANTED, "Thing"], ["this", "s"]])
def test_generation_refuses_an_export_that_names_its_own_module(spec, planted, tiny_export, tmp_path, capsys):
    pipeline = shutil.copytree(tiny_export, tmp_path / "pipeline")
    _plant_entry(pipeline, "extra", spec)
    modules = set(sys.modules)
    out = tmp_path / "samples"
    code, err = run_entry(generate_cli.main, [f"pipeline={pipeline}", f"hydra.run.dir={out}"], capsys)
    assert code == 2
    assert_one_line(err, "'extra'", spec[0], "run the code of a module")
    assert not planted.exists() and spec[0] not in set(sys.modules) - modules
    assert not out.exists()


def test_generation_refuses_a_custom_pipeline_class(tiny_export, tmp_path, capsys):
    pipeline = shutil.copytree(tiny_export, tmp_path / "pipeline")
    _plant_entry(pipeline, "_class_name", [PLANTED, "Thing"])
    code, err = run_entry(generate_cli.main, [f"pipeline={pipeline}", f"hydra.run.dir={tmp_path / 's'}"], capsys)
    assert code == 2
    assert_one_line(err, "not a diffusers pipeline class")


def test_a_planted_checkpoint_is_not_loaded(planted, scene_dir, tmp_path, capsys):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "break_a_scene_phase": 1, "extra": Payload(planted)}, ckpt)
    out = tmp_path / "run"
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}",
                                           f"ckpt_path={ckpt}"], capsys)
    assert code == 2
    assert_one_line(err, f"ckpt_path='{ckpt}'", "could run code")
    assert not planted.exists() and not out.exists()


@pytest.mark.parametrize("content,expected", [
    (b"not a checkpoint at all", "not a PyTorch checkpoint"),
    ("tensor", "not a checkpoint of bas-train"),
])
def test_a_file_that_is_not_a_checkpoint_is_named(content, expected, scene_dir, tmp_path, capsys):
    ckpt = tmp_path / "last.ckpt"
    if content == "tensor":
        torch.save({"weights": torch.zeros(2)}, ckpt)
    else:
        ckpt.write_bytes(content)
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={tmp_path / 'r'}",
                                           f"ckpt_path={ckpt}"], capsys)
    assert code == 2
    assert_one_line(err, expected, "(<run>/checkpoints/last.ckpt)")


def test_a_planted_vae_stage_is_not_loaded(planted, tmp_path, capsys):
    out = tmp_path / "pretrain"
    out.mkdir()
    torch.save({"weights": {}, "latent_scale": 1.0, "extra": Payload(planted)}, out / "vae_stage.pt")
    code, err = run_entry(pretrain_cli.main, ["vae.steps=1", "denoiser.steps=1", "logger=none",
                                              "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"], capsys)
    assert code == 2
    assert_one_line(err, str(out / "vae_stage.pt"), "move it away")
    assert not planted.exists()
    assert sorted(p.name for p in out.iterdir()) == ["vae_stage.pt"]  # the user's file stays, nothing is added


def _plant_pipeline_module(folder, marker):
    """A `stable_diffusion.py` (the name of a diffusers pipeline module, which model_index.json files name for
    their safety checker) that leaves the marker when imported."""
    folder.mkdir(exist_ok=True)
    (folder / "stable_diffusion.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                                "AutoencoderKL = StableDiffusionSafetyChecker = object\n")
    return folder


@pytest.mark.parametrize("how", ["bas-train", "python -m", "bas-generate"])
def test_a_pipeline_module_name_never_imports_a_same_named_module(how, saved_model, tiny_export, scene_dir, tmp_path):
    """`["stable_diffusion", ...]` passes as diffusers' own pipeline module, and is only ever imported by its full
    path; a same-named module in the working directory and on PYTHONPATH does not run, however the command starts
    (`python -m` puts the working directory first on the path)."""
    import os
    import subprocess
    from pathlib import Path

    marker = tmp_path / "payload_ran"
    planted_dir = _plant_pipeline_module(tmp_path / "cwd", marker)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(planted_dir)}
    if how == "bas-generate":
        pipeline = shutil.copytree(tiny_export, tmp_path / "pipeline")
        _plant_entry(pipeline, "safety_checker", ["stable_diffusion", "StableDiffusionSafetyChecker"])
        command = [str(bin_dir / "bas-generate"), f"pipeline={pipeline}", f"hydra.run.dir={tmp_path / 'out'}"]
    else:
        model = shutil.copytree(saved_model, tmp_path / "model")
        _plant_entry(model, "vae", ["stable_diffusion", "AutoencoderKL"])
        start = [str(bin_dir / "bas-train")] if how == "bas-train" else [sys.executable, "-m",
                                                                          "break_a_scene.cli.train"]
        command = [*start, *FAST, "model=sd21_base", f"model.components.pretrained_model_name_or_path={model}",
                   f"data.scene.folder={scene_dir}", f"hydra.run.dir={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=planted_dir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert_one_line(result.stderr)
    assert not marker.exists()
