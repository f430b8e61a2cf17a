"""`bas-pretrain` end to end at toy sizes: VAE stage, UNet stage with EMA and checkpoints, resume, export."""

import json

import pytest
import torch

from break_a_scene.families.stable_diffusion import StableDiffusion
from tests.integration.test_cli import run


def test_pretrain_resume_and_export(tmp_path):
    out = tmp_path / "pretrain"
    args = ["vae.steps=3", "vae.batch_size=4", "denoiser.batch_size=4", "denoiser.num_workers=0", "checkpoint_every=2",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none",
            f"hydra.run.dir={out}"]
    first = run("bas-pretrain", *args, "denoiser.steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    stage = torch.load(out / "vae_stage.pt", weights_only=False)
    assert stage["latent_scale"] > 1 and stage["vae_mse"] == 0.0  # the pixel-shuffle VAE is exact
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and "current_model_state" in ckpt  # EMA weights + the live ones

    again = run("bas-pretrain", *args, "denoiser.steps=4", "ckpt_path=last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "VAE stage loaded" in again.stderr + again.stdout
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4

    model = out / "toyworld_model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["break_a_scene.toyworld.pixel_vae", "PixelShuffleVAE"]
    parts = StableDiffusion.load(str(model))
    assert parts.unet.dtype == torch.float32  # shipped fp16, loaded fp32 for training
    assert parts.latent_scale == stage["latent_scale"]
    assert len(parts.tokenizer) < 1000 and parts.text_encoder.config.vocab_size == len(parts.tokenizer)


@pytest.mark.slow  # 40 s: two bas-pretrain runs (the default suite keeps the resume-and-export one)
def test_continue_from_exported_weights(tmp_path):
    base = ["denoiser.batch_size=4", "denoiser.num_workers=0", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "logger=none"]
    first = run("bas-pretrain", *base, "denoiser.steps=1", f"hydra.run.dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    exported = StableDiffusion.load(str(tmp_path / "a" / "toyworld_model"))
    again = run("bas-pretrain", *base, "denoiser.steps=1", f"init_from={tmp_path / 'a' / 'toyworld_model'}", "seed=1",
                f"hydra.run.dir={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (tmp_path / "b" / "vae_stage.pt").exists()  # the exported VAE and its scale are reused
    continued = StableDiffusion.load(str(tmp_path / "b" / "toyworld_model"))
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


@pytest.mark.slow  # 45 s: two bas-pretrain runs
def test_shipped_recipe_two_stages(tmp_path):
    """experiments/toyworld/pretrain_shipped.sh, shortened: stage 1 under SD's schedule, stage 2 continues its
    export under zero terminal SNR with v-prediction; the export carries the schedule."""
    import os
    import subprocess

    from tests.integration.test_cli import BIN

    env = {**os.environ, "STAGE1_STEPS": "1", "STAGE2_STEPS": "1", "BIN": str(BIN)}
    done = subprocess.run(["bash", "experiments/toyworld/pretrain_shipped.sh", str(tmp_path), "denoiser.batch_size=4",
                           "denoiser.num_workers=0", "vae.steps=1", "logger=none", "trainer.enable_progress_bar=false",
                           "trainer.enable_model_summary=false"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    first = StableDiffusion.load(str(tmp_path / "stage1" / "toyworld_model")).noise_scheduler.config
    second = StableDiffusion.load(str(tmp_path / "stage2" / "toyworld_model")).noise_scheduler.config
    settings = [(c.prediction_type, c.rescale_betas_zero_snr, c.timestep_spacing) for c in (first, second)]
    assert settings == [("epsilon", False, "leading"), ("v_prediction", True, "trailing")]


def _one_seeded_step(module):
    """Two drawn scenes, their captions, and the module's training loss on them after torch.manual_seed(0)."""
    import random

    from break_a_scene.scene import image_to_tensor
    from break_a_scene.toyworld.world import caption, render, sample_scene

    scenes = [sample_scene(random.Random(i)) for i in range(2)]
    images = torch.stack([image_to_tensor(render(s, 32)[0], 32) for s in scenes])
    captions = [caption(s) for s in scenes]
    torch.manual_seed(0)
    return images, captions, module.training_step((images, captions), 0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # the step alone, outside a Trainer
@pytest.mark.parametrize("schedule", [None, {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}])
def test_pretraining_loss_target_follows_the_schedule(tmp_path, schedule):
    """The loss regresses the noise under epsilon and the velocity under v-prediction (zero terminal SNR:
    at t=999 the velocity is minus the clean latent)."""
    from hydra.utils import instantiate

    from break_a_scene.toyworld.pretrain import ToyWorldPretraining, apply_noise_schedule
    from tests.helpers import compose_config

    family = instantiate(compose_config("pretrain", [], tmp_path).model.components)
    apply_noise_schedule(family, schedule)
    images, captions, loss = _one_seeded_step(ToyWorldPretraining(family))

    torch.manual_seed(0)
    scheduler = family.noise_scheduler
    latents = family.vae.encode(images).latent_dist.sample() * family.latent_scale
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (2,))
    from break_a_scene.tokens import tokenize
    with torch.no_grad():
        pred = family.unet(scheduler.add_noise(latents, noise, t), t,
                               family.text_encoder(tokenize(family.tokenizer, captions))[0]).sample
    target = scheduler.get_velocity(latents, noise, t) if schedule else noise
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(pred, target).item(), rel=1e-5)
    if schedule:
        assert scheduler.alphas_cumprod[-1] < 1e-6  # zero terminal SNR
        end = torch.tensor([999, 999])
        velocity = scheduler.get_velocity(latents, noise, end)
        assert torch.allclose(velocity, -latents, atol=1e-3)


def test_mmdit_recipe_trains_resumes_exports_and_samples(tmp_path):
    """experiments/toyworld/pretrain_mmdit.sh, shortened to 2 + 1 steps: the MM-DiT trains, the rerun resumes from
    its checkpoint, and the export is a StableDiffusion3Pipeline (the toy VAE, no T5) that loads as the toy
    MM-DiT family and draws images through its own pipeline with no T5 rows."""
    import os
    import subprocess

    from break_a_scene.families.toy_mmdit import ToyMMDiT
    from break_a_scene.sampling import sample_images
    from tests.integration.test_cli import BIN

    args = ["bash", "experiments/toyworld/pretrain_mmdit.sh", str(tmp_path), "denoiser.batch_size=4",
            "denoiser.num_workers=0", "checkpoint_every=2", "logger=none", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false"]
    first = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "STEPS": "2", "BIN": str(BIN)})
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "STEPS": "3", "BIN": str(BIN)})
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3

    model = tmp_path / "toyworld_model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline" and index["text_encoder_3"] == [None, None]
    assert index["vae"] == ["break_a_scene.toyworld.pixel_vae", "PixelShuffleVAE"]
    parts = ToyMMDiT.load(str(model))
    assert parts.transformer.dtype == torch.float32 and parts.latent_scale > 1
    assert len(parts.tokenizer) < 1000 and parts.tokenizer.get_vocab() == parts.tokenizer_2.get_vocab()
    hidden, _ = parts.encode_prompt(parts.tokenize(["a photo of a red star"]), 32)
    assert hidden.shape == (1, 40, 256)  # the 40 CLIP positions alone: no T5 rows
    pipe = parts.pipeline()
    assert ToyMMDiT.call_kwargs() == {"max_sequence_length": 0}
    sample = next(sample_images(pipe, ["a photo of a red star"], [0], 32, 2, 3.0, 1, ["star"], 4, progress=False,
                                family=ToyMMDiT))
    assert sample.image.size == (32, 32) and sample.attention["star"].shape == (4, 4)  # latent 16 / 4


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # the step alone, outside a Trainer
def test_mmdit_pretraining_regresses_the_flow_velocity(tmp_path):
    """The MM-DiT's pretraining loss is rectified flow's: x_s = (1 - s) x + s n regressed onto n - x, s from the
    logit-normal draw on the unshifted schedule, with the text of both CLIP encoders side by side."""
    from hydra.utils import instantiate

    from break_a_scene.toyworld.pretrain import ToyWorldPretraining
    from tests.helpers import compose_config

    family = instantiate(compose_config("pretrain", ["model=toyworld_mmdit_init"], tmp_path).model.components)
    module = ToyWorldPretraining(family)
    assert {"transformer", "text_encoder", "text_encoder_2"} <= {name for name, _ in module.named_children()}
    images, captions, loss = _one_seeded_step(module)

    torch.manual_seed(0)
    latents = torch.nn.functional.pixel_unshuffle(images, 2) * family.latent_scale
    noise = torch.randn_like(latents)
    sigma = torch.randn(2).sigmoid()  # shift 1: the schedule's sigma is the draw, on its 1000-step grid
    index = (sigma * 1000).long().clamp(max=999)
    s = family.noise_scheduler.sigmas[index][:, None, None, None]
    assert torch.allclose(s.flatten(), (1000 - index) / 1000)  # the 1000-step grid from sigma 1 down
    ids = family.tokenize(captions)
    first = family.text_encoder(ids[:, 0], output_hidden_states=True)
    second = family.text_encoder_2(ids[:, 1], output_hidden_states=True)
    with torch.no_grad():
        pred = family.transformer(hidden_states=(1 - s) * latents + s * noise,
                                      timestep=family.noise_scheduler.timesteps[index],
                                      encoder_hidden_states=torch.cat([first.hidden_states[-2],
                                                                       second.hidden_states[-2]], -1),
                                      pooled_projections=torch.cat([first.text_embeds, second.text_embeds], -1)).sample
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(pred, noise - latents).item(), rel=1e-5)


def test_a_noise_schedule_the_scheduler_lacks_is_refused_in_one_line(tmp_path):
    done = run("bas-pretrain", "model=toyworld_mmdit_init", "+noise_schedule.rescale_betas_zero_snr=true",
               "denoiser.steps=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: noise_schedule sets rescale_betas_zero_snr, which the model's FlowMatchEulerDiscreteScheduler does "
        "not have; it takes")
    assert not (tmp_path / "run").exists()
