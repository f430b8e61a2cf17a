"""A compiled UNet (torch.compile) trains with the attention capture inside: the eager losses, across the
phase switch (where it recompiles for the newly trainable weights)."""

import lightning as L
import pytest
import torch

from break_a_scene.training import build_run
from tests.helpers import FAST, compose_config


class Losses(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append((float(outputs["loss"]), float(trainer.callback_metrics["loss_attention"])))


def run(tmp_path, scene_dir, extra):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "method.phase1_steps=2",
                                   "method.phase2_steps=1", *extra], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    losses = Losses()
    trainer.callbacks.append(losses)
    trainer.fit(module, datamodule=datamodule)
    return losses.values, module


@pytest.mark.slow  # about 80 s on 2 cores: compiling the tiny UNet's training step, once a phase
def test_compiled_unet_gives_the_eager_losses(tmp_path, scene_dir):
    torch._dynamo.reset()
    eager, _ = run(tmp_path / "eager", scene_dir, [])
    compiled, module = run(tmp_path / "compiled", scene_dir, ["method.compile_denoiser=default",
                                                              "method.compile_backend=aot_eager"])
    assert module.denoiser_forward is not module.unet.forward  # the step did go through torch.compile
    assert len(compiled) == 3 and all(attention > 0 for _, attention in compiled)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
