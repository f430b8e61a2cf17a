"""The LightningModule: the Lightning hooks of a Break-A-Scene run, reading the method's parts.

What trains in each phase and its optimizer groups are the `PhasePlan` (phases.py), the loss is the `Objective`
(objective.py), the VAE side the `LatentCache`; the module holds the model, moves from phase 1 to phase 2 itself
(`on_train_batch_start`: the switch is part of the method, so no configuration can leave it out), and wires the
step. Callbacks read it only through `CallbackView`.
"""

from __future__ import annotations

import contextlib
import logging

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from break_a_scene.attention import AttentionCapture
from break_a_scene.ema import EmaTeacher
from break_a_scene.errors import UserInputError
from break_a_scene.families.base import ModelFamily
from break_a_scene.latent_cache import LatentCache
from break_a_scene.losses import attention_iou
from break_a_scene.objective import Losses, Objective, StepTensors
from break_a_scene.optim import clip_grad_norm_with_
from break_a_scene.phases import OptimizerFactory, PhasePlan
from break_a_scene.precision import FrozenWeights, autocast_dtype, castable_parameters
from break_a_scene.run_view import AttentionSnapshot, RunFacts
from break_a_scene.settings import MethodSettings, OptimizerSettings
from break_a_scene.tokens import (
    PlaceholderTokens,
    TokenRowsEmbedding,
    frozen_rows_grad_sq,
    split_token_rows,
    token_slug,
)

log = logging.getLogger(__name__)
PHASE_KEY = "break_a_scene_phase"  # the phase in a checkpoint: bas-train's checkpoints alone hold it
EMA_KEY = "break_a_scene_ema_teacher"  # the EMA teacher's moved weights, in phase-2 checkpoints that use one


class BreakASceneModule(L.LightningModule):
    def __init__(self, family: ModelFamily, tokens: PlaceholderTokens, method: MethodSettings, resolution: int,
                 optimizer: OptimizerFactory = OptimizerSettings(), run_info: dict | None = None):
        super().__init__()
        self.save_hyperparameters(method.as_dict())  # in checkpoints and loggers, as plain values
        self.method, self.plan, self.objective = method, PhasePlan(method), Objective(method)
        self.run_info = dict(run_info or {})  # what the export's manifest and W&B record about the run
        self.facts = RunFacts(tokens, resolution, method.attention_resolution_divisor, method.phase1_steps,
                              method.phase2_steps, self.run_info)
        for name, encoder in family.named_text_encoders():  # text_encoder (and text_encoder_2 for SDXL)
            setattr(self, name, encoder)
        self.text_encoders = family.text_encoders  # a plain list: the attributes above register them
        self.vae = family.vae
        setattr(self, family.denoiser_name, family.denoiser)  # "unet" or "transformer" in checkpoints
        self.family, self.tokens, self.optimizer_factory = family, tokens, optimizer
        self.phase = self.plan.phase_at(0)
        self.frozen_weights: FrozenWeights | None = None  # set at fit start under mixed precision
        self.denoiser_forward = self.denoiser.forward  # the step's denoiser call; compiled at fit start on request
        self.plan.adapt(family)
        for index, encoder in enumerate(self.text_encoders):
            split_token_rows(encoder, tokens.ids_in(index))
        # the contrastive loss's anchors: the rows as they start (rebuilt alike when a run resumes)
        self.initial_rows = [rows.detach().clone() for rows in self.token_rows] if method.lambda_contrastive else []
        self.ema_teacher: EmaTeacher | None = None  # made when phase 2 starts (`_start_ema_teacher`)
        self._first_log_due = True  # the run's first step logs (`_log_step`); again at each fit start
        self.vae.requires_grad_(False)
        # Trainability must be right before Lightning wraps the model in DDP, which happens before
        # configure_optimizers: DDP reduces exactly the parameters that require grad when it is built.
        self._set_trainable()
        self.attention_resolution = family.latent_size(resolution) // method.attention_resolution_divisor
        self.latents = LatentCache(self.vae, method.cache_latents)
        self.capture = self._attention_capture() if method.lambda_attention > 0 else None
        if method.gradient_checkpointing:
            family.enable_gradient_checkpointing()

    def _attention_capture(self) -> AttentionCapture:
        method = self.method
        try:
            capture = self.family.attention_capture(self.family.latent_size(self.facts.resolution),
                                                        self.attention_resolution,
                                                        released=method.attention_capture == "released")
        except ValueError as err:  # e.g. no cross-attention layer at the requested side: the settings, not us
            raise UserInputError(str(err)) from None
        if method.attention_layers is not None:
            capture.select(method.attention_layers)
        return capture

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or transformer (registered under the family's name for it, so checkpoints keep theirs)."""
        return self.family.denoiser

    @property
    def total_steps(self) -> int:
        return self.facts.total_steps

    @property
    def token_rows(self) -> list[torch.nn.Parameter]:
        """The placeholder tokens' embedding rows, (N, d) in each text encoder: all that phase 1 trains."""
        embeddings: list[TokenRowsEmbedding] = [encoder.get_input_embeddings() for encoder in self.text_encoders]
        return [embedding.rows for embedding in embeddings]

    # ---- phases -------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """The phase switch: at step `phase1_steps`, what phase 2 trains is unfrozen and a fresh optimizer is
        built through `configure_optimizers` (its state reset, as in the paper and the released code). Under
        DDP the model is wrapped again: DDP only reduces the gradients of parameters that required grad when it
        was built, and the denoiser did not in phase 1."""
        phase = self.plan.phase_at(self.trainer.global_step)
        if phase == self.phase:
            return
        self.phase = phase
        strategy = self.trainer.strategy
        strategy.setup_optimizers(self.trainer)
        if isinstance(strategy, DDPStrategy):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()
        log.info("phase 2 from step %d: training %s, new optimizer", self.trainer.global_step,
                 self.plan.trainable(self.phase))

    def _set_trainable(self) -> None:
        self.plan.set_trainable(self.phase, self.family, self.token_rows)
        if self.frozen_weights is not None:
            self.frozen_weights.update(castable_parameters(self))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self._set_trainable()
        return self.plan.optimizer(self.phase, self.family, self.token_rows, self.optimizer_factory)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by the norm that the released code's whole-matrix gradient has: the trainable gradients plus
        what the frozen embedding rows received (see `TokenRowsEmbedding`).

        Also under mixed precision with fused AdamW, which Lightning refuses to clip because the fused kernels
        unscale the gradients themselves: they are unscaled here first, and torch's GradScaler then steps the
        fused kernels without scaling again."""
        frozen = [encoder.get_input_embeddings().take_frozen_rows_grad() for encoder in self.text_encoders]
        if not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16 mixed precision's GradScaler
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            scale = scaler.get_scale() if scaler is not None else None
            extra = sum((frozen_rows_grad_sq(*grad, self.trainer.world_size, scale) for grad in frozen
                         if grad is not None), torch.zeros(()))
            clip_grad_norm_with_(grads, gradient_clip_val, extra)

    # ---- checkpoints and the EMA teacher (beyond the paper) -----------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[PHASE_KEY] = self.phase
        if self.ema_teacher is not None:
            checkpoint[EMA_KEY] = self.ema_teacher.state_dict(self.denoiser)
        if self.frozen_weights is not None:  # the float32 values, so a resumed phase 2 starts from them
            checkpoint["state_dict"].update(self.frozen_weights.full_precision_state(self.named_parameters()))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning calls this before it wraps the model in DDP, so the resumed phase's trainability is
        # what DDP sees.
        self.phase = checkpoint.get(PHASE_KEY, self.phase)
        if self.frozen_weights is not None:  # the held float32 values become the checkpoint's
            self.frozen_weights.reload(self.named_parameters(), checkpoint["state_dict"])
        self._set_trainable()
        if EMA_KEY in checkpoint:  # the denoiser still holds its loaded weights; the moved ones come from the file
            self._start_ema_teacher()
            self.ema_teacher.load_state_dict(checkpoint[EMA_KEY])

    def _start_ema_teacher(self) -> None:
        """Copy the denoiser as it is into the teacher, with its own attention processors (not the capture's)."""
        capturing = self.capture is not None and self.capture.installed
        if capturing:
            self.capture.remove()
        self.ema_teacher = EmaTeacher(self.denoiser, self.method.ema_decay)
        if capturing:
            self.capture.install()
        log.info("EMA teacher from step %d (decay %g)", self.global_step, self.method.ema_decay)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema_teacher is not None:
            self.ema_teacher.update(self.denoiser)

    # ---- fit hooks ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # frozen weights go to the low dtype before Lightning moves the model to the GPU, so the GPU never
        # holds their float32 copies (FLUX.1's would be 67 GB)
        dtype = autocast_dtype(self.trainer.precision)
        if self.method.low_precision_frozen and dtype is not None and self.frozen_weights is None:
            self.frozen_weights = FrozenWeights(dtype)
            self.frozen_weights.update(castable_parameters(self))

    def on_fit_start(self) -> None:
        self._first_log_due = True
        self.initial_rows = [rows.to(self.device) for rows in self.initial_rows]
        if self.ema_teacher is not None:  # made from a checkpoint before Lightning moved the module
            self.ema_teacher.to(self.device)
        if self.capture is not None:
            self.capture.install()
        if self.method.compile_denoiser:  # the training forward only: sampling and the export use the plain one
            self.denoiser_forward = torch.compile(self.denoiser.forward, mode=self.method.compile_denoiser,
                                                  backend=self.method.compile_backend)

    def on_train_end(self) -> None:
        if self.frozen_weights is not None:  # float32 again for the export and the last samples
            self.frozen_weights.restore()
            self.frozen_weights = None

    def on_fit_end(self) -> None:
        if self.capture is not None:
            self.capture.remove()

    @contextlib.contextmanager
    def inference_family(self):
        """The model parts in eval mode and with the attention processors they had before training (the
        training capture out), for sampling during training and for the export; put back afterwards."""
        capturing = self.capture is not None and self.capture.installed
        if capturing:
            self.capture.remove()
        was_training = self.training
        self.eval()
        mixed = self.frozen_weights is not None  # some weights are in the low dtype: compute as training does
        try:
            with torch.autocast(self.device.type, dtype=self.frozen_weights.dtype if mixed else None, enabled=mixed):
                yield self.family
        finally:
            self.train(was_training)
            if capturing:
                self.capture.install()

    # ---- the step -----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> dict:
        """The step's loss, and under "attention" the step's `AttentionSnapshot` for the callbacks (None
        without the attention loss)."""
        if self.method.lambda_ema_teacher and self.phase == 2 and self.ema_teacher is None:
            self._start_ema_teacher()
        pixels, input_ids, n = batch["pixel_values"], batch["input_ids"], batch["pixel_values"].shape[0]
        if "class_pixel_values" in batch:  # instance rows first, class rows after: the attention loss reads the first
            pixels = torch.cat([pixels, batch["class_pixel_values"]])
            input_ids = torch.cat([input_ids, batch["class_input_ids"]])
        # the step's randomness comes from the batch (its first sample's seed), not from a global RNG state,
        # so a resumed run draws exactly what an uninterrupted one would
        generator = torch.Generator(device=pixels.device).manual_seed(batch["noise_seed"][0])
        family = self.family
        with torch.no_grad():
            sample = self.latents.posterior(pixels, batch["latent_keys"]).sample(generator=generator)
            latents = (sample - family.latent_shift) * family.latent_scale
        noisy, timesteps, target = family.training_inputs(latents, generator)
        conditioning = family.encode_prompt(input_ids, self.facts.resolution)
        pred = family.denoise(noisy, timesteps, conditioning, forward=self.denoiser_forward)
        step = StepTensors(pred, target, n, batch["masks"], batch["union_mask"], batch["token_valid"],
                           rows=self.token_rows if self.initial_rows else [], anchors=self.initial_rows)
        if self.ema_teacher is not None:
            with torch.no_grad():
                step.teacher = family.denoise(noisy, timesteps, conditioning, forward=self.ema_teacher.model)[:n]
        if self.capture is not None:
            positions = family.text_key_positions(batch["input_ids"], batch["token_ids"], self.tokens)
            if self.method.attention_keys == "first":  # the first text sequence's key alone (SD 3: CLIP's)
                positions = positions[..., :1]
            step.maps = self.capture.token_maps(positions, rows=slice(0, n))  # (B, K, r, r)
            self.capture.store.clear()
        losses = self.objective(step)
        self._log_step(losses, step, batch)
        snapshot = None if step.maps is None else AttentionSnapshot(
            step.maps.detach(), losses.attention_targets, batch["token_ids"], batch["pixel_values"], batch["prompts"])
        return {"loss": losses.total, "attention": snapshot}

    def _log_step(self, losses: Losses, step: StepTensors, batch: dict) -> None:
        """On the steps Lightning writes to the loggers, and on the run's first and last steps (which the
        progress bar shows): the loss terms and each sampled token's attention-to-mask IoU (the host must see
        which tokens were sampled: a sync). Only then: Lightning's `log` costs most of a millisecond a value on
        the CPU, a tenth of a toy step, for values no logger would write. No prog_bar: Lightning would turn
        those into numbers (a host sync) every step; callbacks.ProgressBar shows the losses on logging steps."""
        done, every = self.global_step + 1, self.trainer.log_every_n_steps  # steps done after this one
        if not (self._first_log_due or done >= self.trainer.max_steps or (every and done % every == 0)):
            return
        self._first_log_due = False
        diagnostics = {}
        if step.maps is not None:
            iou, token_ids = attention_iou(step.maps.detach(), losses.attention_targets), batch["token_ids"]
            diagnostics = {f"iou/{token_slug(name)}": iou[token_ids == token_id].mean()
                           for name, token_id in zip(self.tokens.names, self.tokens.ids)
                           if bool((token_ids == token_id).any())}
        diagnostics["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log_dict({**losses.terms, **diagnostics}, batch_size=step.instances)
        self.log("phase", float(self.phase), batch_size=step.instances)
