"""The LightningModule: one Break-A-Scene training step, and the optimizer of the current phase.

Phase 1 trains only the new token rows (5e-4); phase 2 trains the UNet and the whole text encoder (2e-6)
with a fresh optimizer, or with `phase2_trainable=lora` LoRA adapters and the token rows (`lora.py`). The
module moves from one to the other itself (`on_train_batch_start`): the switch is part of the method, so no
configuration can leave it out. Callbacks read the module only through `CallbackView`.

What each phase trains is configurable, which is how the paper's baselines are built: TI-m trains tokens in
both phases, DB-m everything in both (at phase2_lr), CD-m the cross-attention K/V (always at phase2_lr) with
the token rows (always at phase1_lr).
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal, Protocol

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy

from break_a_scene.attention import AttentionCapture
from break_a_scene.ema import EmaTeacher, check_decay
from break_a_scene.families.base import ModelFamily
from break_a_scene.lora import LoraSettings, add_lora, lora_parameters
from break_a_scene.losses import (
    attention_iou,
    cross_attention_loss,
    masked_diffusion_loss,
    momentum_losses,
    prior_preservation_loss,
    resize_masks,
    token_contrastive_loss,
)
from break_a_scene.optim import adamw
from break_a_scene.precision import FrozenWeights, autocast_dtype, castable_parameters, quantize_linears
from break_a_scene.tokens import (
    PlaceholderTokens,
    TokenRowsEmbedding,
    split_token_rows,
    sum_rows_by_id,
    token_slug,
)

log = logging.getLogger(__name__)
OptimizerFactory = Callable[..., torch.optim.Optimizer]
Trainable = Literal["tokens", "all", "cross_attention_kv", "lora"]
TRAINABLE = ("tokens", "all", "cross_attention_kv", "lora")
PHASE_KEY = "break_a_scene_phase"  # the phase in a checkpoint: bas-train's checkpoints alone hold it
EMA_KEY = "break_a_scene_ema_teacher"  # the EMA teacher's moved weights, in phase-2 checkpoints that use one


@dataclass(frozen=True)
class RunFacts:
    """What does not change during a run and callbacks may read: the tokens, sizes, the phase schedule, and
    what the export's manifest and W&B record about the run (`run_info`)."""

    tokens: PlaceholderTokens
    resolution: int
    attention_resolution_divisor: int
    phase1_steps: int
    phase2_steps: int
    run_info: dict

    @property
    def total_steps(self) -> int:
        return self.phase1_steps + self.phase2_steps

    def phase_at(self, step: int) -> int:
        """The one rule for the phase: 2 from optimizer step `phase1_steps` on."""
        return 1 if step < self.phase1_steps else 2


class CallbackView(Protocol):
    """All that the framework's callbacks may read of the module (tests/unit/test_structure.py holds them to
    it): its facts, the current phase, its device, and the model parts set up for sampling."""

    facts: RunFacts
    phase: int
    device: torch.device

    def inference_components(self) -> AbstractContextManager[ModelFamily]: ...


@dataclass
class AttentionSnapshot:
    """The last training step's token maps, for the visual callbacks (detached, on the step's device)."""

    maps: torch.Tensor  # (B, K, r, r), averaged over layers and heads
    targets: torch.Tensor  # (B, K, r, r), masks at the loss resolution
    token_ids: torch.Tensor  # (B, K), -1 where padded
    pixel_values: torch.Tensor  # (B, 3, R, R) in [-1, 1], flipped as the step saw them
    prompts: list[str]


def clip_grad_norm_with_(grads: list[torch.Tensor], max_norm: float, extra_sq: torch.Tensor) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` on `grads` as if more gradient of squared norm `extra_sq` (one that
    is not applied) were among them; returns the total norm."""
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    total = torch.sqrt(norms.pow(2).sum() + extra_sq.to(norms.device))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef.to(grads[0].dtype))
    return total


class BreakASceneModule(L.LightningModule):
    def __init__(
        self,
        components: ModelFamily,
        tokens: PlaceholderTokens,
        resolution: int,
        optimizer: OptimizerFactory = partial(adamw, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
        phase1_steps: int = 400,
        phase2_steps: int = 400,
        phase1_lr: float = 5e-4,
        phase2_lr: float = 2e-6,
        masked_loss: bool = True,
        mask_normalization: Literal["none", "area"] = "none",
        lambda_attention: float = 0.01,
        lambda_prior: float = 1.0,
        attention_resolution_divisor: int = 4,
        attention_capture: Literal["loss_layers", "released"] = "loss_layers",
        attention_layers: list[int] | None = None,
        attention_keys: Literal["all", "first"] = "all",
        gradient_checkpointing: bool = False,
        mask_downsampling: Literal["nearest", "max"] = "nearest",
        phase1_trainable: Trainable = "tokens",
        phase2_trainable: Trainable = "all",
        run_info: dict | None = None,
        cache_latents: bool = True,
        low_precision_frozen: bool = True,
        freeze_text_encoder: bool = False,
        compile_unet: str | None = None,
        compile_backend: str = "inductor",
        lora: dict | None = None,
        quantize_frozen: str | None = None,
        lambda_contrastive: float = 0.0,
        contrastive_temperature: float = 0.1,
        lambda_ema_teacher: float = 0.0,
        ema_decay: float = 0.99,
    ):
        super().__init__()
        for key, value in (("phase1_trainable", phase1_trainable), ("phase2_trainable", phase2_trainable)):
            if value not in TRAINABLE:
                raise ValueError(f"method.{key} must be one of {TRAINABLE}, not {value!r}")
        if lambda_ema_teacher and not masked_loss:
            raise ValueError("method.lambda_ema_teacher splits the masked loss by concept: it needs "
                             "method.masked_loss=true (or set method.lambda_ema_teacher=0)")
        if lambda_ema_teacher:
            check_decay(ema_decay)
        self.save_hyperparameters(ignore=["components", "tokens", "optimizer", "run_info"])
        self.run_info = dict(run_info or {})  # what the export's manifest and W&B record about the run
        self.facts = RunFacts(tokens, resolution, attention_resolution_divisor, phase1_steps, phase2_steps,
                              self.run_info)
        for name, encoder in components.named_text_encoders():  # text_encoder (and text_encoder_2 for SDXL)
            setattr(self, name, encoder)
        self.text_encoders = components.text_encoders  # a plain list: the attributes above register them
        self.vae = components.vae
        setattr(self, components.denoiser_name, components.denoiser)  # "unet" or "transformer" in checkpoints
        self.components = components
        self.tokens = tokens
        self.optimizer_factory = optimizer
        self.phase = self.phase_at(0)
        self.frozen_weights: FrozenWeights | None = None  # set at fit start under mixed precision
        self.denoiser_forward = self.denoiser.forward  # the step's denoiser call; compiled at fit start on request
        self.lora = LoraSettings(**(lora or {}))
        if quantize_frozen:  # before the adapters, which then wrap the quantized layers (QLoRA)
            for part in self._frozen_for_the_run(components):
                quantize_linears(part, quantize_frozen)
        if "lora" in (phase1_trainable, phase2_trainable):
            add_lora(components, self.lora)
        for index, encoder in enumerate(self.text_encoders):
            split_token_rows(encoder, tokens.ids_in(index))
        # the contrastive loss's anchors: the rows as they start (rebuilt alike when a run resumes)
        self.initial_rows = [rows.detach().clone() for rows in self.token_rows] if lambda_contrastive else []
        self.ema_teacher: EmaTeacher | None = None  # made when phase 2 starts (`_start_ema_teacher`)
        self.vae.requires_grad_(False)
        # Trainability must be right before Lightning wraps the model in DDP, which happens before
        # configure_optimizers: DDP reduces exactly the parameters that require grad when it is built.
        self._set_trainable()
        latent_size = components.latent_size(resolution)
        self.attention_resolution = latent_size // attention_resolution_divisor
        self.capture: AttentionCapture | None = None
        # the VAE posterior of each picture the steps see again and again (the scene, its flip, the class images)
        self.latent_cache: dict[str, object] | None = {} if cache_latents else None
        if lambda_attention > 0:
            self.capture = components.attention_capture(latent_size, self.attention_resolution,
                                                        released=attention_capture == "released")
            if attention_layers is not None:
                self.capture.select(attention_layers)
        if attention_keys not in ("all", "first"):
            raise ValueError(f"method.attention_keys must be all or first, not {attention_keys!r}")
        if gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
            for encoder in self.text_encoders:
                enable = getattr(encoder, "activation_checkpointing_enable", None)  # transformers >= 5
                (enable or encoder.gradient_checkpointing_enable)()

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or transformer (registered under the family's name for it, so checkpoints keep theirs)."""
        return self.components.denoiser

    @property
    def total_steps(self) -> int:
        return self.facts.total_steps

    # ---- phases -------------------------------------------------------------------------------------
    def phase_at(self, step: int) -> int:
        return self.facts.phase_at(step)

    def update_phase(self, step: int) -> bool:
        """Move to the phase of `step`; True when it changed (`on_train_batch_start` then rebuilds the optimizer)."""
        phase = self.phase_at(step)
        changed, self.phase = phase != self.phase, phase
        return changed

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """The phase switch: at step `phase1_steps`, what phase 2 trains is unfrozen and a fresh optimizer is
        built through `configure_optimizers` (its state reset, as in the paper and the released code). Under
        DDP the model is wrapped again: DDP only reduces the gradients of parameters that required grad when it
        was built, and the UNet did not in phase 1."""
        if not self.update_phase(self.trainer.global_step):
            return
        strategy = self.trainer.strategy
        strategy.setup_optimizers(self.trainer)
        if isinstance(strategy, DDPStrategy):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()
        log.info("phase 2 from step %d: training %s, new optimizer", self.trainer.global_step, self.trainable)

    @property
    def trainable(self) -> str:
        """What the current phase trains: "tokens", "all" (UNet + text encoder) or "cross_attention_kv"."""
        return self.hparams.phase1_trainable if self.phase == 1 else self.hparams.phase2_trainable

    def _cross_attention_kv(self) -> list[torch.nn.Parameter]:
        return self.components.cross_attention_kv()

    @property
    def token_rows(self) -> list[torch.nn.Parameter]:
        """The placeholder tokens' embedding rows, (N, d) in each text encoder: all that phase 1 trains."""
        embeddings: list[TokenRowsEmbedding] = [encoder.get_input_embeddings() for encoder in self.text_encoders]
        return [embedding.rows for embedding in embeddings]

    def _lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for part in (self.denoiser, *self.text_encoders) for p in lora_parameters(part)]

    def _frozen_for_the_run(self, components: ModelFamily) -> list[torch.nn.Module]:
        """The denoiser and text encoders whose weights no phase trains (adapters and token rows aside)."""
        phases = {self.hparams.phase1_trainable, self.hparams.phase2_trainable}
        frozen = [] if phases & {"all", "cross_attention_kv"} else [components.denoiser]
        if "all" not in phases or self.hparams.freeze_text_encoder:
            frozen += components.text_encoders
        if not frozen:
            raise ValueError(
                f"method.quantize_frozen={self.hparams.quantize_frozen} holds the weights no phase trains in "
                f"{self.hparams.quantize_frozen}, but this run trains the whole {components.denoiser_name} and text "
                f"encoders (phase2_trainable={self.hparams.phase2_trainable}); use variant=lora.")
        return frozen

    def _set_trainable(self) -> None:
        everything = self.trainable == "all"
        self.denoiser.requires_grad_(everything)
        for encoder in self.text_encoders:
            encoder.requires_grad_(everything and not self.hparams.freeze_text_encoder)
        if self.trainable == "cross_attention_kv":
            for param in self._cross_attention_kv():
                param.requires_grad_(True)
        if self.trainable == "lora":
            for param in self._lora_parameters():
                param.requires_grad_(True)
        for rows in self.token_rows:
            rows.requires_grad_(self.trainable != "lora" or self.lora.train_tokens)
        if self.frozen_weights is not None:
            self.frozen_weights.update(castable_parameters(self))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self._set_trainable()
        lr = self.hparams.phase1_lr if self.phase == 1 else self.hparams.phase2_lr
        if self.trainable == "tokens":
            return self.optimizer_factory(self.token_rows, lr=lr)
        if self.trainable == "cross_attention_kv":
            groups = [{"params": self.token_rows, "lr": self.hparams.phase1_lr},
                      {"params": self._cross_attention_kv(), "lr": self.hparams.phase2_lr}]
            return self.optimizer_factory(groups, lr=lr)
        if self.trainable == "lora":  # the adapters at their lr, the token rows at phase2_lr as in a full phase 2
            groups = [{"params": self._lora_parameters(), "lr": self.lora.lr}]
            if self.lora.train_tokens:
                groups.append({"params": self.token_rows, "lr": self.hparams.phase2_lr})
            return self.optimizer_factory(groups, lr=lr)
        encoders = [p for encoder in self.text_encoders for p in encoder.parameters()]
        params = [p for p in (*self.denoiser.parameters(), *encoders) if p.requires_grad]
        return self.optimizer_factory(params, lr=lr)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by the norm that the released code's whole-matrix gradient has: the trainable gradients plus
        what the frozen embedding rows received (see `TokenRowsEmbedding`).

        Also under mixed precision with fused AdamW, which Lightning refuses to clip because the fused kernels
        unscale the gradients themselves: they are unscaled here first, and torch's GradScaler then steps the
        fused kernels without scaling again."""
        frozen = [encoder.get_input_embeddings().take_frozen_rows_grad() for encoder in self.text_encoders]
        if not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self._grad_scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            self._grad_scaler.unscale_(optimizer)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            extra = sum((self._frozen_rows_grad_sq(*grad) for grad in frozen if grad is not None), torch.zeros(()))
            clip_grad_norm_with_(grads, gradient_clip_val, extra)

    @property
    def _grad_scaler(self):
        """fp16 mixed precision's GradScaler, or None."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def _frozen_rows_grad_sq(self, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Squared norm of the frozen rows' gradient as the whole matrix would hold it: averaged over ranks
        (as DDP averages), unscaled (as mixed precision unscales before clipping)."""
        world = self.trainer.world_size
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, (ids.cpu(), rows.cpu()))
            ids, rows = sum_rows_by_id(gathered)
            rows = rows / world
        if self._grad_scaler is not None:
            rows = rows / self._grad_scaler.get_scale()
        return rows.pow(2).sum()

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

    # ---- the EMA teacher (beyond the paper) ---------------------------------------------------------
    def _start_ema_teacher(self) -> None:
        """Copy the denoiser as it is into the teacher, with its own attention processors (not the capture's)."""
        capturing = self.capture is not None and self.capture.installed
        if capturing:
            self.capture.remove()
        self.ema_teacher = EmaTeacher(self.denoiser, self.hparams.ema_decay)
        if capturing:
            self.capture.install()
        log.info("EMA teacher from step %d (decay %g)", self.global_step, self.hparams.ema_decay)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema_teacher is not None:
            self.ema_teacher.update(self.denoiser)

    # ---- hooks --------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # frozen weights go to the low dtype before Lightning moves the model to the GPU, so the GPU never
        # holds their float32 copies (FLUX.1's would be 67 GB)
        dtype = autocast_dtype(self.trainer.precision)
        if self.hparams.low_precision_frozen and dtype is not None and self.frozen_weights is None:
            self.frozen_weights = FrozenWeights(dtype)
            self.frozen_weights.update(castable_parameters(self))

    def on_fit_start(self) -> None:
        self.initial_rows = [rows.to(self.device) for rows in self.initial_rows]
        if self.ema_teacher is not None:  # made from a checkpoint before Lightning moved the module
            self.ema_teacher.to(self.device)
        if self.capture is not None:
            self.capture.install()
        if self.hparams.compile_unet:  # the training forward only: sampling and the export use the plain denoiser
            self.denoiser_forward = torch.compile(
                self.denoiser.forward, mode=self.hparams.compile_unet, backend=self.hparams.compile_backend
            )

    def on_train_end(self) -> None:
        if self.frozen_weights is not None:  # float32 again for the export and the last samples
            self.frozen_weights.restore()
            self.frozen_weights = None

    def on_fit_end(self) -> None:
        if self.capture is not None:
            self.capture.remove()

    @contextlib.contextmanager
    def inference_components(self):
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
                yield self.components
        finally:
            self.train(was_training)
            if capturing:
                self.capture.install()

    def _posterior(self, pixels: torch.Tensor, keys: list[str | None]):
        """The VAE posterior of the batch's pictures. With the cache, each keyed picture is encoded once, alone
        (so its posterior does not depend on the batch it first came in), and the batch's posterior is stacked
        from the cached ones: sampling it draws exactly what sampling a fresh encoding would."""
        if self.latent_cache is None or None in keys:
            return self._encode(pixels)
        for row, key in enumerate(keys):
            if key not in self.latent_cache:
                self.latent_cache[key] = self._encode(pixels[row : row + 1])
        first = self.latent_cache[keys[0]]
        return type(first)(torch.cat([self.latent_cache[key].parameters for key in keys]))

    def _encode(self, pixels: torch.Tensor):
        """The VAE posterior with float32 parameters, whatever dtype the VAE computes in (the step's noise
        and latents are float32 as the trainable weights are)."""
        posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return type(posterior)(posterior.parameters.float())

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's logs (its rule: every `log_every_n_steps` optimizer steps)."""
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def _iou_per_token(self, maps: torch.Tensor, targets: torch.Tensor, token_ids: torch.Tensor) -> dict:
        """Attention-to-mask IoU of each token sampled in this batch, averaged over its occurrences."""
        iou = attention_iou(maps, targets)
        return {
            f"iou/{token_slug(name)}": iou[token_ids == token_id].mean()
            for name, token_id in zip(self.tokens.names, self.tokens.ids)
            if bool((token_ids == token_id).any())
        }

    # ---- the step -----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> dict:
        """The step's loss, and under "attention" the step's `AttentionSnapshot` for the callbacks (None
        without the attention loss)."""
        if self.hparams.lambda_ema_teacher and self.phase == 2 and self.ema_teacher is None:
            self._start_ema_teacher()
        pixels, input_ids = batch["pixel_values"], batch["input_ids"]
        instances = pixels.shape[0]
        with_prior = "class_pixel_values" in batch
        if with_prior:  # instance rows first, class rows after: the attention loss reads the first half
            pixels = torch.cat([pixels, batch["class_pixel_values"]])
            input_ids = torch.cat([input_ids, batch["class_input_ids"]])

        # the step's randomness comes from the batch (its first sample's seed), not from a global RNG state,
        # so a resumed run draws exactly what an uninterrupted one would
        generator = torch.Generator(device=pixels.device).manual_seed(batch["noise_seed"][0])
        with torch.no_grad():
            posterior = self._posterior(pixels, batch["latent_keys"])
            sample = posterior.sample(generator=generator)
            latents = (sample - self.components.latent_shift) * self.components.latent_scale
        noisy, timesteps, target = self.components.training_inputs(latents, generator)
        conditioning = self.components.encode_prompt(input_ids, self.hparams.resolution)
        pred = self.components.denoise(noisy, timesteps, conditioning, forward=self.denoiser_forward)

        pred_inst, target_inst = pred[:instances], target[:instances]
        logs = {}
        if self.ema_teacher is not None:  # the hardest concept's masked loss, the others held by the teacher
            with torch.no_grad():
                teacher = self.components.denoise(noisy, timesteps, conditioning, forward=self.ema_teacher.model)
            masks = resize_masks(batch["masks"], latents.shape[-1], self.hparams.mask_downsampling)  # (B,K,h,w)
            loss_rec, loss_preserve = momentum_losses(pred_inst, target_inst, teacher[:instances], masks,
                                                      batch["token_valid"], self.hparams.mask_normalization)
            loss = loss_rec + self.hparams.lambda_ema_teacher * loss_preserve
            logs["loss_preserve"] = loss_preserve
        elif self.hparams.masked_loss:
            mask = resize_masks(batch["union_mask"], latents.shape[-1], self.hparams.mask_downsampling)  # (B,1,h,w)
            loss_rec = loss = masked_diffusion_loss(pred_inst, target_inst, mask, self.hparams.mask_normalization)
        else:
            loss_rec = loss = F.mse_loss(pred_inst.float(), target_inst.float())
        logs["loss_masked"] = loss_rec
        diagnostics = {}
        snapshot = None
        if with_prior:
            loss_prior = prior_preservation_loss(pred[instances:], target[instances:])
            loss = loss + self.hparams.lambda_prior * loss_prior
            logs["loss_prior"] = loss_prior
        if self.capture is not None:
            positions = self.components.text_key_positions(batch["input_ids"], batch["token_ids"], self.tokens)
            if self.hparams.attention_keys == "first":  # the first text sequence's key alone (SD 3: CLIP's)
                positions = positions[..., :1]
            maps = self.capture.token_maps(positions, rows=slice(0, instances))  # (B, K, r, r)
            targets = resize_masks(batch["masks"], self.attention_resolution, self.hparams.mask_downsampling)
            loss_attn = cross_attention_loss(maps, targets, batch["token_valid"])
            loss = loss + self.hparams.lambda_attention * loss_attn
            logs["loss_attention"] = loss_attn
            if self._logging_step():  # the IoU needs the host to see which tokens were sampled: a sync
                diagnostics.update(self._iou_per_token(maps.detach(), targets, batch["token_ids"]))
            snapshot = AttentionSnapshot(
                maps.detach(), targets, batch["token_ids"], batch["pixel_values"], batch["prompts"]
            )
            self.capture.store.clear()
        if self.initial_rows and len(self.tokens.names) > 1:
            loss_con = sum(token_contrastive_loss(rows, anchors, self.hparams.contrastive_temperature)
                           for rows, anchors in zip(self.token_rows, self.initial_rows)) / len(self.initial_rows)
            loss = loss + self.hparams.lambda_contrastive * loss_con
            logs["loss_contrastive"] = loss_con
        logs["loss"] = loss
        diagnostics["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        # no prog_bar: Lightning would turn those into numbers (a host sync) every step; callbacks.ProgressBar
        # shows the losses on logging steps
        self.log_dict({**logs, **diagnostics}, batch_size=instances)
        self.log("phase", float(self.phase), batch_size=instances)
        return {"loss": loss, "attention": snapshot}
