"""Each memory preset composes and trains 1 + 1 steps with the tiny model, switching on what it says."""

import pytest
import torch

from break_a_scene.training import build_run
from tests.helpers import FAST, compose_config

# preset: (gradient checkpointing, 8-bit moments, text encoder trained in phase 2, precision)
PRESETS = {
    "full": (False, False, True, "32-true"),
    "24gb": (True, False, True, "32-true"),
    "16gb": (True, True, True, "32-true"),
    "12gb": (True, True, False, "bf16-mixed"),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_memory_preset_trains_with_its_switches(preset, tmp_path, scene_dir):
    checkpointing, eight_bit, text_trains, precision = PRESETS[preset]
    if eight_bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:  # the preset's 8-bit AdamW needs it
            pytest.skip(f"bitsandbytes cannot run here: {err}")
    cfg = compose_config("train", [
        *FAST, f"data.scene.folder={scene_dir}", f"memory={preset}", "method.phase1_steps=1", "method.phase2_steps=1",
    ], tmp_path)
    assert cfg.trainer.precision == precision
    trainer, module, datamodule = build_run(cfg)
    text_weight = next(p for n, p in module.text_encoder.named_parameters() if n.endswith("final_layer_norm.weight"))
    text_before = text_weight.detach().clone()
    unet_before = module.unet.conv_in.weight.detach().clone()
    trainer.fit(module, datamodule=datamodule)

    assert trainer.global_step == 2 and module.phase == 2
    assert module.unet.is_gradient_checkpointing == checkpointing
    optimizer = trainer.optimizers[0]
    assert (type(optimizer).__name__ == "AdamW8bit") == eight_bit
    big = max((p for g in optimizer.param_groups for p in g["params"]), key=torch.Tensor.numel)
    state = optimizer.state[big]
    moments = [state["state1"], state["state2"]] if eight_bit else [state["exp_avg"], state["exp_avg_sq"]]
    assert [(m.dtype, m.numel()) for m in moments] == [(torch.uint8 if eight_bit else torch.float32, big.numel())] * 2
    assert not torch.equal(module.unet.conv_in.weight, unet_before)
    assert torch.equal(text_weight, text_before) != text_trains
    assert torch.isfinite(torch.stack([p.detach().float().sum() for p in module.parameters()])).all()
