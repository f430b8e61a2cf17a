"""Where a door cannot open, it stops before any work with one line that names the setting and a fix, and the
fix works (the test follows it): QLoRA on a model built from config, the SLURM launcher off a cluster, a model
too large for the host, a manifest or LoRA asset of the wrong family, a damaged evaluation weight file."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from break_a_scene.cli import evaluate as evaluate_cli
from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import save_model as save_cli
from break_a_scene.cli import train as train_cli
from break_a_scene.model_folders import FLOAT32_BYTES, available_memory, counted_parameters
from tests.contract.cases import TOY_SCENE, invoke, one_line
from tests.contract.test_every_door import TRAIN, TRIAL
from tests.evaluation.encoders_tiny import save_tiny_clip, save_tiny_dino


def test_qlora_on_a_model_built_from_config_says_to_save_it_and_that_works(tmp_path):
    tiny = [*TRAIN, "model=tiny", "memory=qlora_nf4"]
    code, err = invoke(train_cli.main, [*tiny, f"hydra.run.dir={tmp_path / 'refused'}"])
    line = one_line(err)
    assert code == 2 and "bas-save-model" in line and "lora=fused" not in line  # the advice no longer loops
    assert not (tmp_path / "refused").exists()

    code, err = invoke(save_cli.main, ["model=tiny", f"out={tmp_path / 'base'}", f"hydra.run.dir={tmp_path / 'log'}"])
    assert code == 0, err
    (log,) = (tmp_path / "log").glob("*.log")
    advice = re.search(r"load it with (model=\S+) (model\.components\.pretrained_model_name_or_path=\S+)",
                       log.read_text())
    assert advice and advice.group(1) == "model=sd15", log.read_text()
    code, err = invoke(train_cli.main, [*TRAIN, *advice.groups(), "model.resolution=64", "memory=qlora_nf4",
                                        f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 0, err[-3000:]
    manifest = json.loads((tmp_path / "run" / "pipeline" / "break_a_scene.json").read_text())
    assert manifest["format"] == "lora_asset" and manifest["base_model"] == str(tmp_path / "base")


def test_the_slurm_launcher_off_a_cluster_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here, whatever the machine has
    code, err = invoke(train_cli.main, ["-m", "hydra/launcher=slurm_gpu", *TRAIN, "seed=0,1",
                                        f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    line = one_line(err)
    assert code == 2 and "hydra/launcher=slurm_gpu" in line and "srun" in line
    assert not (tmp_path / "sweep").exists()


def test_a_model_larger_than_the_host_is_refused_before_it_is_built(tmp_path):
    from break_a_scene.config import compose

    config = compose("save_model", ["model=flux_arch", "out=unused"], tmp_path / "c").model.components
    needed = counted_parameters(config) * FLOAT32_BYTES
    assert round(needed / FLOAT32_BYTES / 1e9, 1) == 16.7  # FLUX.1-dev's transformer, CLIP-L and T5-XXL's encoder
    if needed < available_memory("cpu"):
        pytest.skip("this host holds FLUX.1-dev's float32 weights")
    for main, argv in ((save_cli.main, [f"out={tmp_path / 'flux'}"]), (train_cli.main, [*TRAIN])):
        code, err = invoke(main, ["model=flux_arch", *argv, f"hydra.run.dir={tmp_path / 'run'}"])
        line = one_line(err)
        assert code == 2 and "16.7 B parameters" in line and "tiny_flux" in line
        assert not (tmp_path / "flux").exists() and not (tmp_path / "run").exists()


def test_save_model_replaces_nothing(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, err = invoke(save_cli.main, ["model=tiny", f"out={tmp_path / 'mine'}", f"hydra.run.dir={tmp_path / 'log'}"])
    assert code == 2 and "replaces nothing" in one_line(err)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("family,expected", [
    ("break_a_scene.families.base.ModelFamily", "is the seam itself"),
    ("break_a_scene.families.flux.Flux", "which makes a FluxPipeline, but its model"),
    (3, "not a class name"),
])
def test_a_manifest_of_the_wrong_family_is_one_line(family, expected, tiny_export, tmp_path):
    export = shutil.copytree(tiny_export, tmp_path / "pipeline")
    manifest = json.loads((export / "break_a_scene.json").read_text())
    (export / "break_a_scene.json").write_text(json.dumps({**manifest, "family": family}))
    code, err = invoke(generate_cli.main, [f"pipeline={export}", f"hydra.run.dir={tmp_path / 'out'}"])
    assert code == 2 and expected in one_line(err)
    assert not (tmp_path / "out").exists()


def test_a_lora_asset_on_a_base_of_another_family_is_one_line(tiny_export, tmp_path):
    from break_a_scene.lora import LORA_WEIGHTS, TOKEN_EMBEDDINGS

    base = tmp_path / "sd3"
    code, err = invoke(save_cli.main, ["model=tiny_sd3", f"out={base}", f"hydra.run.dir={tmp_path / 'log'}"])
    assert code == 0, err
    asset = tmp_path / "asset"
    asset.mkdir()
    for name in (TOKEN_EMBEDDINGS, LORA_WEIGHTS):
        (asset / name).write_bytes(b"")
    manifest = json.loads((tiny_export / "break_a_scene.json").read_text())
    (asset / "break_a_scene.json").write_text(json.dumps({**manifest, "format": "lora_asset",
                                                          "base_model": str(base)}))
    code, err = invoke(generate_cli.main, [f"pipeline={asset}", f"hydra.run.dir={tmp_path / 'out'}"])
    assert code == 2 and "is a StableDiffusion3Pipeline" in one_line(err)


def _damaged(path, size: int = 64):
    path.write_bytes(path.read_bytes()[:size])
    return path


@pytest.fixture
def paper_weights(tmp_path):
    return {"clip": save_tiny_clip(tmp_path / "clip"), "dino": save_tiny_dino(tmp_path / "dino")}


@pytest.mark.parametrize("damaged", ["judge", "clip", "dino", "dreamsim"])
def test_a_damaged_evaluation_weight_file_stops_the_trial_before_it_trains(damaged, paper_weights, tmp_path):
    clip, dino = paper_weights["clip"], paper_weights["dino"]
    if damaged == "judge":
        from break_a_scene.config import ASSETS_DIR

        judge = _damaged(shutil.copy(ASSETS_DIR / "toyworld" / "judge.pt", tmp_path / "judge.pt"))
        world = ["evaluation=toyworld", f"evaluation.judge={judge}"]
    else:
        world = ["evaluation/segmenter=attention", f"evaluation.clip.model_name=local-dir:{clip}",
                 "evaluation.clip.pretrained=null", f"evaluation.dino.name_or_path={dino}", "evaluation.detector=null",
                 "evaluation.dreamsim=null"]
        if damaged == "clip":
            _damaged(clip / "open_clip_pytorch_model.bin")
        elif damaged == "dino":
            _damaged(dino / "model.safetensors")
        else:
            cache = tmp_path / "dreamsim"
            cache.mkdir()
            (cache / "open_clip_vitb32_pretrain.pth.tar").write_bytes(b"truncated")
            (cache / "open_clip_vitb32_single_lora").mkdir()
            world[-1] = f"+evaluation.dreamsim={{_target_: break_a_scene.evaluation.encoders.DreamSimEncoder.load, " \
                        f"cache_dir: {cache}, device: cpu}}"
    out = tmp_path / "evaluation"
    code, err = invoke(evaluate_cli.main, [*world, *TRIAL, f"data.scene.folder={TOY_SCENE}",
                                           "evaluation.continue_on_error=false", f"evaluation.out_dir={out}"])
    line = one_line(err)
    assert code == 2 and f"evaluation.{damaged}" in line and "damaged" in line
    assert not list(out.rglob("pipeline"))  # nothing was trained
