"""A run killed at any point and resumed as the README says gives the weights of a run never interrupted.

Each run is the real `bas-train` in a subprocess; the kill is a SIGKILL from inside the process at a chosen
step (or in the middle of the export), which no Lightning or Python handler sees.
"""

import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import FAST
from tests.integration.test_cli import run

STEPS = ["method.phase1_steps=4", "method.phase2_steps=4"]
CHECKPOINTS = ["callbacks=checkpoint", "callbacks.checkpoint.every_n_train_steps=2"]


def train(out, scene_dir, *extra) -> subprocess.CompletedProcess:
    return run("bas-train", *FAST, *STEPS, *CHECKPOINTS, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}",
               *extra)


def weights(pipeline_dir) -> dict[str, torch.Tensor]:
    return {f"{part}.{name}": tensor
            for part, file in (("unet", "unet/diffusion_pytorch_model.safetensors"),
                               ("text_encoder", "text_encoder/model.safetensors"))
            for name, tensor in load_file(pipeline_dir / file).items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    from tests.conftest import write_scene

    scene = write_scene(root / "scene")
    result = train(root / "run", scene)
    assert result.returncode == 0, result.stderr[-3000:]
    return scene, weights(root / "run" / "pipeline")


@pytest.mark.parametrize("kill", [
    pytest.param("+callbacks.kill._target_=tests.helpers.KillAtStep +callbacks.kill.step=3",  # phase 1 (ckpt at 2)
                 id="phase1", marks=pytest.mark.slow),
    pytest.param("+callbacks.kill._target_=tests.helpers.KillAtStep +callbacks.kill.step=5",  # after the switch
                 id="switch"),
    pytest.param("+callbacks.kill._target_=tests.helpers.KillAtStep +callbacks.kill.step=7",  # phase 2 (ckpt at 6)
                 id="phase2", marks=pytest.mark.slow),
    pytest.param("+callbacks.kill._target_=tests.helpers.KillDuringExport", id="export",  # while exporting
                 marks=pytest.mark.slow),
])
def test_killed_and_resumed_run_exports_the_same_weights(tmp_path, uninterrupted, kill):
    scene, expected = uninterrupted
    out = tmp_path / "run"
    killed = train(out, scene, *kill.split())
    assert killed.returncode == -9  # SIGKILL
    assert not (out / "pipeline").exists()
    resumed = train(out, scene, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = weights(out / "pipeline")
    assert got.keys() == expected.keys()
    worst = max((got[name] - expected[name]).abs().max().item() for name in expected)
    assert worst <= 1e-6
    assert not list(out.glob(".pipeline.partial-*"))  # what the killed export left is gone


def test_checkpoints_keep_the_frozen_rows_bit_identical(tmp_path, scene_dir):
    from tests.conftest import tiny_components

    out = tmp_path / "run"
    result = train(out, scene_dir, "method.phase2_steps=0", "callbacks.checkpoint.every_n_train_steps=1",
                   "callbacks.checkpoint.save_top_k=-1", "+callbacks.checkpoint.filename='{step}'")
    assert result.returncode == 0, result.stderr[-3000:]
    initial = tiny_components().text_encoder.get_input_embeddings().weight.detach()
    for step in range(1, 5):
        state = torch.load(out / "checkpoints" / f"step={step}.ckpt", weights_only=False)["state_dict"]
        base, rows = (next(v for k, v in state.items() if k.endswith(f"token_embedding.{name}"))
                      for name in ("base.weight", "rows"))
        assert torch.equal(base[:49408], initial)  # every original row, bit-identical, in every checkpoint
        assert rows.shape == (2, initial.shape[1]) and not torch.equal(rows, base[49408:])


@pytest.mark.slow
def test_killed_and_resumed_ema_teacher_run_exports_the_same_weights(tmp_path):
    """The teacher's weights travel in the phase-2 checkpoint: without them the resumed run's preservation
    loss would pull toward a different teacher and the weights would differ."""
    from tests.conftest import write_scene

    scene = write_scene(tmp_path / "scene")
    ema = ["variant=ema_teacher", "method.ema_decay=0.5", "method.lambda_ema_teacher=100"]  # a strong pull
    whole = train(tmp_path / "whole", scene, *ema)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=7"]  # phase 2, ckpt at 6
    killed = train(out, scene, *ema, *kill)
    assert killed.returncode == -9
    assert "break_a_scene_ema_teacher" in torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = train(out, scene, *ema, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = weights(tmp_path / "whole" / "pipeline"), weights(out / "pipeline")
    assert max((got[name] - expected[name]).abs().max().item() for name in expected) <= 1e-6
