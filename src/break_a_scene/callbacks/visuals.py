"""What each token attends to while it trains, as pictures: in W&B when a W&B logger is configured, and
always as PNG files under the run's `visuals/` folder, so a user without W&B sees the same thing."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from break_a_scene.figures import colorize, grey, heatmap_overlay, labelled_grid, masks_overlay, tensor_to_image
from break_a_scene.generate import default_prompts
from break_a_scene.losses import normalize_by_max
from break_a_scene.run_view import CallbackView
from break_a_scene.sampling import sample_images

log = logging.getLogger(__name__)


class VisualSink:
    """Writes a picture to `<dirpath>/<key>/step_XXXXXX.png` and to every W&B logger of the trainer."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def write(self, trainer: L.Trainer, key: str, picture: Image.Image, caption: str, step: int | None = None,
              wandb_image=None) -> Path:
        name = f"step_{step:06d}.png" if step is not None else f"{key}.png"
        folder = self.dirpath / key if step is not None else self.dirpath
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / name)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                image = wandb_image if wandb_image is not None else wandb.Image(picture, caption=caption)
                logger.log_metrics({f"visuals/{key}": image}, step=trainer.global_step if step is None else step)
        return folder / name


class AttentionMapLogger(L.Callback):
    """Every `every_n_steps`: each sampled token's map at the loss resolution, its target mask, and the
    map over the input image the step saw (flips included), one row per token of the first sample(s)."""

    def __init__(self, dirpath: str, every_n_steps: int = 50, max_samples: int = 1, cell: int = 128):
        self.sink = VisualSink(dirpath)
        self.every_n_steps = every_n_steps
        self.max_samples = max_samples
        self.cell = cell

    def on_train_batch_end(self, trainer: L.Trainer, module: CallbackView, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step  # already counts this batch's optimizer step
        snap = outputs.get("attention") if isinstance(outputs, dict) else None
        if not trainer.is_global_zero or snap is None or step % self.every_n_steps:
            return
        names = dict(zip(module.facts.tokens.ids, module.facts.tokens.names))
        rows, labels = [], []
        for b in range(min(self.max_samples, snap.maps.shape[0])):
            image = tensor_to_image(snap.pixel_values[b])
            for k, token_id in enumerate(snap.token_ids[b].tolist()):
                if token_id < 0:
                    continue
                grid = normalize_by_max(snap.maps[b, k].float()).cpu().numpy()
                target = snap.targets[b, k].float().cpu().numpy()
                rows.append([colorize(grid, self.cell), grey(target, self.cell), heatmap_overlay(image, grid)])
                labels.append(f"{names[token_id]}  ({snap.prompts[b]})")
        sheet = labelled_grid(rows, labels, ["attention", "mask", "over image"], cell=self.cell)
        self.sink.write(trainer, "attention", sheet, caption=f"step {step}", step=step)


class SampleLogger(L.Callback):
    """Samples for fixed prompts and seeds with each token's attention averaged over the sampling steps,
    every `every_n_steps`, at the end of phase 1 and when training is complete.

    Prompts default to each token alone, all tokens together, and all tokens in `new_context`.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 200, prompts: list[str] | None = None,
                 new_context: str = "a photo of {} in the snow", seeds: list[int] = (0,),
                 num_inference_steps: int = 25, guidance_scale: float = 7.5, cell: int = 128):
        self.sink = VisualSink(dirpath)
        self.every_n_steps = every_n_steps
        self.prompts = list(prompts) if prompts else None
        self.new_context = new_context
        self.seeds = list(seeds)
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.cell = cell

    def prompt_list(self, tokens: list[str]) -> list[str]:
        if self.prompts:
            return self.prompts
        return [*default_prompts(tokens, "a photo of {}"), self.new_context.format(" and ".join(tokens))]

    def _due(self, trainer: L.Trainer, module: CallbackView) -> bool:
        step = trainer.global_step
        return step % self.every_n_steps == 0 or step == module.facts.phase1_steps

    def on_train_batch_end(self, trainer: L.Trainer, module: CallbackView, outputs, batch, batch_idx: int) -> None:
        if trainer.is_global_zero and self._due(trainer, module) and trainer.global_step < module.facts.total_steps:
            self.log_samples(trainer, module)

    def on_fit_end(self, trainer: L.Trainer, module: CallbackView) -> None:
        # at the end of fit, also when a resumed run finds every step done but was killed before this
        if trainer.is_global_zero and trainer.global_step >= module.facts.total_steps:
            self.log_samples(trainer, module)

    @torch.no_grad()
    def log_samples(self, trainer: L.Trainer, module: CallbackView) -> Path:
        tokens = module.facts.tokens.names
        prompts = [p for p in self.prompt_list(tokens) for _ in self.seeds]
        seeds = [s for _ in self.prompt_list(tokens) for s in self.seeds]
        with module.inference_family() as family:  # sampling installs its own capture
            samples = list(sample_images(
                family.pipeline(), prompts, seeds, module.facts.resolution,
                self.num_inference_steps, self.guidance_scale, batch_size=len(prompts), attention_tokens=tokens,
                attention_resolution_divisor=module.facts.attention_resolution_divisor, progress=False,
                family=type(family),
            ))
        blank = Image.new("RGB", (8, 8), "white")
        rows = [
            [sample.image] + [heatmap_overlay(sample.image, sample.attention[t]) if t in sample.attention else blank
                              for t in tokens]
            for sample in samples
        ]
        labels = [f"{s.prompt} (seed {s.seed})" for s in samples]
        sheet = labelled_grid(rows, labels, ["sample", *[f"attn {t}" for t in tokens]], cell=self.cell)
        return self.sink.write(trainer, "samples", sheet, caption=f"step {trainer.global_step}",
                               step=trainer.global_step)


class SceneLogger(L.Callback):
    """Once per run: the input image with its masks (a W&B segmentation overlay whose class labels are
    the token names; several photos side by side), and the resolved Hydra config as the W&B run config."""

    def __init__(self, dirpath: str):
        self.sink = VisualSink(dirpath)

    def on_train_start(self, trainer: L.Trainer, module: CallbackView) -> None:
        if not trainer.is_global_zero:
            return
        photos = trainer.datamodule.photos
        image = tensor_to_image(torch.cat([photo.image for photo in photos], dim=-1))
        masks = torch.cat([photo.masks for photo in photos], dim=-1).cpu().numpy()
        labels = np.zeros(masks.shape[1:], dtype=np.uint8)  # 0 = none, i + 1 = token i (later masks on top)
        for index, mask in enumerate(masks):
            labels[mask > 0.5] = index + 1
        wandb_image = None
        caption = "input scene" if len(photos) == 1 else f"input scene, {len(photos)} photos"
        if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
            import wandb

            class_labels = {0: "none", **{i + 1: name for i, name in enumerate(module.facts.tokens.names)}}
            wandb_image = wandb.Image(image, masks={"concepts": {"mask_data": labels, "class_labels": class_labels}},
                                      caption=caption)
            config = module.facts.run_info.get("config")
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger) and config is not None:
                    logger.experiment.config.update(config, allow_val_change=True)
        names = list(module.facts.tokens.names)
        # each photo drawn alone, so a concept two photos show is labelled in both
        drawn = [masks_overlay(tensor_to_image(photo.image), photo.masks.cpu().numpy(), labels=names, size=256)
                 for photo in photos]
        picture = Image.new("RGB", (sum(d.width for d in drawn), max(d.height for d in drawn)))
        for n, one in enumerate(drawn):
            picture.paste(one, (sum(d.width for d in drawn[:n]), 0))
        self.sink.write(trainer, "scene", picture, caption=caption, wandb_image=wandb_image)
