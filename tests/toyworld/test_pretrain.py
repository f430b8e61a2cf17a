"""`bas-pretrain` end to end at toy sizes: VAE stage, UNet stage with EMA and checkpoints, resume, export."""

import json

import pytest
import torch

from break_a_scene.models import load_pretrained
from tests.integration.test_cli import run


def test_pretrain_resume_and_export(tmp_path):
    out = tmp_path / "pretrain"
    args = ["vae.steps=3", "vae.batch_size=4", "unet.batch_size=4", "unet.num_workers=0", "checkpoint_every=2",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none",
            f"hydra.run.dir={out}"]
    first = run("bas-pretrain", *args, "unet.steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    stage = torch.load(out / "vae_stage.pt", weights_only=False)
    assert stage["latent_scale"] > 1 and stage["vae_mse"] == 0.0  # the pixel-shuffle VAE is exact
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and "current_model_state" in ckpt  # EMA weights + the live ones

    again = run("bas-pretrain", *args, "unet.steps=4", "ckpt_path=last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "VAE stage loaded" in again.stderr + again.stdout
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4

    model = out / "toyworld_model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["break_a_scene.toyworld.pixel_vae", "PixelShuffleVAE"]
    parts = load_pretrained(str(model))
    assert parts.unet.dtype == torch.float32  # shipped fp16, loaded fp32 for training
    assert parts.latent_scale == stage["latent_scale"]
    assert len(parts.tokenizer) < 1000 and parts.text_encoder.config.vocab_size == len(parts.tokenizer)


@pytest.mark.slow  # 40 s: two bas-pretrain runs (the default suite keeps the resume-and-export one)
def test_continue_from_exported_weights(tmp_path):
    base = ["unet.batch_size=4", "unet.num_workers=0", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "logger=none"]
    first = run("bas-pretrain", *base, "unet.steps=1", f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    exported = load_pretrained(str(tmp_path / "a" / "toyworld_model"))
    again = run("bas-pretrain", *base, "unet.steps=1", f"init_from={tmp_path / 'a' / 'toyworld_model'}", "seed=1",
                f"hydra.run.dir={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (tmp_path / "b" / "vae_stage.pt").exists()  # the exported VAE and its scale are reused
    continued = load_pretrained(str(tmp_path / "b" / "toyworld_model"))
    assert continued.latent_scale == exported.latent_scale
    changed = [not torch.equal(a, b) for a, b in zip(exported.unet.parameters(), continued.unet.parameters())]
    assert any(changed)


def test_resumed_data_stream_continues_where_it_stopped():
    from types import SimpleNamespace

    from break_a_scene.toyworld.pretrain import ToyCaptions, ToyDataModule

    full = ToyCaptions(10, seed=3)
    datamodule = ToyDataModule(steps=5, batch_size=2, seed=3)
    datamodule.trainer = SimpleNamespace(global_step=3)  # resumed after 3 of 5 steps
    rest = datamodule.train_dataloader().dataset
    assert len(rest) == 4
    for i in range(4):
        assert torch.equal(rest[i][0], full[6 + i][0]) and rest[i][1] == full[6 + i][1]
