"""Pretraining a toy world's text-to-image model (the UNet one, or the MM-DiT): first a learned VAE if it has one
(a plain loop, minutes), then the denoiser and text encoders as a Lightning run with EMA, resumable from its
checkpoints.

The data are drawn on the fly: sample i is the scene of seed (seed, i), so a run is reproducible and
never sees the same picture twice.
"""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from break_a_scene.checkpoints import check_checkpoint
from break_a_scene.errors import UserInputError
from break_a_scene.families.base import ModelFamily
from break_a_scene.scene import image_to_tensor
from break_a_scene.toyworld.world import caption, render, sample_scene

log = logging.getLogger(__name__)


class ToyCaptions(Dataset):
    """(image in [-1, 1], caption) pairs of freshly drawn scenes; captions sometimes omit position or
    background, and are emptied with probability `caption_dropout` (for classifier-free guidance)."""

    def __init__(self, length: int, seed: int = 0, size: int = 32, caption_dropout: float = 0.1,
                 textures: bool = False, offset: int = 0):
        self.length, self.seed, self.size, self.offset = length, seed, size, offset
        self.caption_dropout, self.textures = caption_dropout, textures

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        rng = random.Random(self.seed * 1_000_003 + self.offset + index)
        scene = sample_scene(rng, textures=self.textures)
        image, _ = render(scene, self.size)
        text = "" if rng.random() < self.caption_dropout else caption(scene, rng)
        return image_to_tensor(image, self.size), text


def fit_vae(family: ModelFamily, steps: int, batch_size: int = 64, lr: float = 1e-3,
            kl_weight: float = 1e-6, seed: int = 0, size: int = 32) -> dict:
    """Train the VAE to reconstruct scenes (nothing to train for the exact PixelShuffleVAE), then set its
    latent scale to 1 / std of the latents, as SD's 0.18215 was chosen. Returns the reconstruction MSE
    and the scale."""
    vae = family.vae.train()
    trainable = [p for p in vae.parameters() if p.requires_grad]
    if trainable:
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        loader = DataLoader(ToyCaptions(steps * batch_size, seed=seed + 1, size=size), batch_size=batch_size)
        bar = tqdm(loader, desc="toy VAE", total=steps)
        for images, _ in bar:
            posterior = vae.encode(images).latent_dist
            recon = vae.decode(posterior.sample()).sample
            loss = F.mse_loss(recon, images) + kl_weight * posterior.kl().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        images = torch.stack([ToyCaptions(256, seed=seed + 2, size=size)[i][0] for i in range(256)])
        latents = vae.encode(images).latent_dist.mode()
        mse = F.mse_loss(vae.decode(latents).sample, images).item()
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    return {"vae_mse": mse, "latent_scale": scale}


class ToyWorldPretraining(L.LightningModule):
    """Text-to-image diffusion training of the denoiser and text encoders on toy captions (VAE frozen), by the
    family's own noise, timesteps and target."""

    def __init__(self, family: ModelFamily, lr: float = 3e-4, weight_decay: float = 1e-2):
        super().__init__()
        self.save_hyperparameters(ignore=["family"])
        self.family = family
        # registered under the pipeline's names, so EMA and checkpoints hold every trained part
        setattr(self, family.denoiser_name, family.denoiser)
        for name, encoder in family.named_text_encoders():
            setattr(self, name, encoder)
        self.vae = family.vae
        self.vae.requires_grad_(False)

    def configure_optimizers(self):
        params = [*self.family.denoiser.parameters(),
                  *(p for encoder in self.family.text_encoders for p in encoder.parameters())]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, captions = batch
        with torch.no_grad():
            latents = (self.vae.encode(images).latent_dist.sample() - self.family.latent_shift) \
            * self.family.latent_scale
        noisy, timesteps, target = self.family.training_inputs(latents, generator=None)  # the global RNG
        conditioning = self.family.encode_prompt(self.family.tokenize(list(captions)).to(self.device),
                                                     images.shape[-1])
        loss = F.mse_loss(self.family.denoise(noisy, timesteps, conditioning), target)
        self.log("loss", loss, prog_bar=True)
        return loss


class ToyDataModule(L.LightningDataModule):
    def __init__(self, steps: int, batch_size: int = 32, seed: int = 0, num_workers: int = 0,
                 caption_dropout: float = 0.1, textures: bool = False, size: int = 32):
        super().__init__()
        self.kwargs = dict(seed=seed, size=size, caption_dropout=caption_dropout, textures=textures)
        self.steps, self.batch_size, self.num_workers = steps, batch_size, num_workers

    def train_dataloader(self) -> DataLoader:
        # A resumed run continues the stream where it stopped: sample i of step s is scene
        # (seed, s * batch_size + i) however often the run was interrupted.
        done = self.trainer.global_step if self.trainer is not None else 0
        remaining = max(self.steps - done, 1) * self.batch_size
        dataset = ToyCaptions(remaining, offset=done * self.batch_size, **self.kwargs)
        return DataLoader(dataset, batch_size=self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)


def vae_state_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "vae_stage.pt"


def _read_vae_stage(stage_file: Path) -> dict:
    """The VAE stage a run saved; tensors and plain data only, so a file planted in the run folder runs no code."""
    try:
        state = torch.load(stage_file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as err:
        raise UserInputError(f"'{stage_file}' is not a VAE stage that bas-pretrain saved ({type(err).__name__}); "
                             f"move it away to train the VAE stage again.") from None
    if not isinstance(state, dict) or not {"weights", "latent_scale"} <= set(state):
        raise UserInputError(f"'{stage_file}' is not a VAE stage that bas-pretrain saved (no weights and latent "
                             f"scale); move it away to train the VAE stage again.")
    return state


def _vae_stage(family: ModelFamily, cfg) -> None:
    """Train (or reload from the run folder) the VAE and its latent scale."""
    stage_file = vae_state_path(cfg.paths.output_dir)
    if stage_file.is_file():
        state = _read_vae_stage(stage_file)
        family.vae.load_state_dict(state["weights"])
        family.vae.register_to_config(scaling_factor=state["latent_scale"])
        log.info("VAE stage loaded from %s (latent scale %.4f)", stage_file, state["latent_scale"])
        return
    summary = fit_vae(family, cfg.vae.steps, cfg.vae.batch_size, cfg.vae.lr, cfg.vae.kl_weight, cfg.seed,
                      cfg.model.resolution)
    stage_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": family.vae.state_dict(), **summary}, stage_file)
    log.info("VAE stage: reconstruction MSE %.5f, latent scale %.4f", summary["vae_mse"], summary["latent_scale"])


def apply_noise_schedule(family: ModelFamily, settings: dict | None) -> None:
    """Train under the model's schedule with `settings` (arguments of its scheduler class) changed; the export
    carries them, so sampling and Break-A-Scene training on the model use the same schedule."""
    if not settings:
        return
    scheduler = family.noise_scheduler
    unknown = sorted(set(settings) - set(scheduler.config))
    if unknown:
        raise UserInputError(
            f"noise_schedule sets {', '.join(unknown)}, which the model's {type(scheduler).__name__} does not have; "
            f"it takes {', '.join(sorted(k for k in scheduler.config if not k.startswith('_')))} (or "
            f"noise_schedule=null)."
        )
    family.noise_scheduler = type(scheduler).from_config(scheduler.config, **settings)


def pretrain(cfg) -> Path:
    """The whole pretraining from a composed `pretrain.yaml`: VAE stage (cached in the run folder), denoiser
    stage with EMA and checkpoints (`ckpt_path=last` resumes), then an fp16 export of the EMA weights."""
    from hydra.utils import get_class, instantiate
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, RichProgressBar


    check_checkpoint(cfg.get("ckpt_path"), "bas-pretrain")
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("init_from"):  # continue from exported weights, with a fresh optimizer and EMA
        family = get_class(cfg.model.components._target_.rpartition(".")[0]).load(cfg.init_from)
        log.info("initialised from %s (latent scale %.4f)", cfg.init_from, family.latent_scale)
        apply_noise_schedule(family, cfg.get("noise_schedule"))
    else:
        family = instantiate(cfg.model.components)
        apply_noise_schedule(family, cfg.get("noise_schedule"))  # refused before the VAE stage writes anything
        _vae_stage(family, cfg)
    family.vae.requires_grad_(False)

    module = ToyWorldPretraining(family, lr=cfg.denoiser.lr, weight_decay=cfg.denoiser.weight_decay)
    datamodule = ToyDataModule(cfg.denoiser.steps, cfg.denoiser.batch_size, cfg.seed, cfg.denoiser.num_workers,
                               cfg.denoiser.caption_dropout, cfg.denoiser.textures, cfg.model.resolution)
    callbacks = [
        ModelCheckpoint(dirpath=Path(cfg.paths.output_dir) / "checkpoints", every_n_train_steps=cfg.checkpoint_every,
                        save_last=True, save_top_k=0),
        EMAWeightAveraging(decay=cfg.denoiser.ema_decay),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    # steps, not epochs, end the run, so a finished run resumes with more steps (denoiser.steps=... ckpt_path=last)
    trainer = instantiate(cfg.trainer, max_steps=cfg.denoiser.steps, max_epochs=-1, callbacks=callbacks,
                          logger=loggers or False, enable_checkpointing=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    export = Path(cfg.export_dir)
    for part in family.parts():
        part.to(torch.float16)
    family.save_pipeline(export)
    log.info("exported the EMA weights (fp16) to %s", export)
    return export
