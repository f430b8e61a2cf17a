"""Frozen weights in the mixed-precision dtype (bf16-mixed on the CPU), and phase 2 with a frozen text encoder."""

import lightning as L
import torch

from break_a_scene.training import build_run
from tests.helpers import FAST, compose_config


def snapshot(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in module.named_parameters()}


class Probe(L.Callback):
    """Records each step's parameter dtypes (inside the step: after the module's phase switch) and the UNet as
    phase 2 starts (before its first update)."""

    def __init__(self):
        self.dtypes, self.unet_at_phase2 = [], None

    def on_before_backward(self, trainer, module, loss):
        embedding = module.text_encoder.get_input_embeddings()
        self.dtypes.append((module.phase, module.unet.conv_in.weight.dtype, embedding.base.weight.dtype,
                            embedding.rows.dtype, next(module.vae.parameters()).dtype))
        if module.phase == 2 and self.unet_at_phase2 is None:
            self.unet_at_phase2 = {n: p.detach().clone() for n, p in module.unet.named_parameters()}


def test_frozen_weights_are_held_in_bf16_and_come_back_bit_for_bit(tmp_path, scene_dir):
    cfg = compose_config("train", [
        *FAST, f"data.scene.folder={scene_dir}", "trainer.precision=bf16-mixed", "method.phase1_steps=2",
        "method.phase2_steps=2", "callbacks=checkpoint", "callbacks.checkpoint.every_n_train_steps=1",
        "callbacks.checkpoint.save_top_k=-1", "+callbacks.checkpoint.filename='{step}'", "callbacks.samples=null",
    ], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    before = snapshot(module)
    probe = Probe()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)

    bf16, fp32 = torch.bfloat16, torch.float32
    assert probe.dtypes == [(1, bf16, bf16, fp32, bf16)] * 2 + [(2, fp32, fp32, fp32, bf16)] * 2
    unet = {n: p for n, p in before.items() if n.startswith("unet.")}
    assert all(torch.equal(probe.unet_at_phase2[n[len("unet."):]], v) for n, v in unet.items())
    after = snapshot(module)
    assert all(v.dtype == fp32 for v in after.values())  # float32 again for the export
    assert all(torch.equal(after[n], v) for n, v in before.items() if n.startswith("vae."))
    assert not torch.equal(after["unet.conv_in.weight"], before["unet.conv_in.weight"])  # phase 2 trained it

    phase1 = torch.load(tmp_path / "run" / "checkpoints" / "step=2.ckpt", weights_only=False)["state_dict"]
    frozen = [n for n in before if n.startswith(("unet.", "vae.", "text_encoder.")) and not n.endswith(".rows")]
    assert all(phase1[n].dtype == fp32 and torch.equal(phase1[n], before[n]) for n in frozen)


def test_frozen_text_encoder_trains_the_unet_and_the_rows_only_in_phase2(tmp_path, scene_dir):
    cfg = compose_config("train", [
        *FAST, f"data.scene.folder={scene_dir}", "method.phase1_steps=0", "method.phase2_steps=2",
        "method.freeze_text_encoder=true",
    ], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    before = snapshot(module)
    trainer.fit(module, datamodule=datamodule)
    after = snapshot(module)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    named = dict(module.named_parameters())
    rows = {id(rows) for rows in module.token_rows}
    assert optimized == {id(p) for n, p in named.items() if n.startswith("unet.")} | rows
    text = [n for n in before if n.startswith("text_encoder.") and not n.endswith(".rows")]
    assert text and all(torch.equal(after[n], before[n]) for n in text)
    rows = next(n for n in before if n.endswith(".rows"))
    assert not torch.equal(after[rows], before[rows])
    assert not torch.equal(after["unet.conv_in.weight"], before["unet.conv_in.weight"])


def test_a_run_resumed_under_bf16_ends_where_the_uninterrupted_one_ends(tmp_path, scene_dir):
    """Frozen weights go to bf16 in `setup`, before the checkpoint loads and the model moves: a run resumed from
    its first phase-2 checkpoint (the UNet trainable again, from the checkpoint) ends bit for bit as the
    uninterrupted run."""
    overrides = [*FAST, f"data.scene.folder={scene_dir}", "trainer.precision=bf16-mixed", "method.phase1_steps=2",
                 "method.phase2_steps=2", "callbacks=checkpoint", "callbacks.checkpoint.every_n_train_steps=1",
                 "callbacks.checkpoint.save_top_k=-1", "+callbacks.checkpoint.filename='{step}'"]
    trainer, module, datamodule = build_run(compose_config("train", overrides, tmp_path / "a"))
    trainer.fit(module, datamodule=datamodule)
    uninterrupted = snapshot(module)
    trainer, module, datamodule = build_run(compose_config("train", overrides, tmp_path / "b"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=tmp_path / "a" / "run" / "checkpoints" / "step=3.ckpt",
                weights_only=False)
    resumed = snapshot(module)
    assert all(v.dtype == torch.float32 and torch.equal(v, uninterrupted[n]) for n, v in resumed.items())


def test_norms_keep_float32_weights_under_bf16():
    """Every parameter may go to bf16 but the normalization layers' (the CPU's group norm refuses a float32 input
    with bf16 weights, which a quantized layer under QLoRA gives)."""
    from break_a_scene.precision import castable_parameters
    from tests.conftest import tiny_components

    unet = tiny_components().unet
    norms = {id(p) for m in unet.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))
             for p in m.parameters()}
    castable = {id(p) for p in castable_parameters(unet)}
    assert norms and not norms & castable and castable | norms == {id(p) for p in unet.parameters()}
