"""Moves training from phase 1 (tokens only) to phase 2 (UNet + text encoder; what `method.phase2_trainable`
says) with a fresh optimizer."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.strategies import DDPStrategy

log = logging.getLogger(__name__)


class PhaseSwitch(L.Callback):
    """When the module's phase changes (`update_phase`: at global step `phase1_steps`), unfreeze and rebuild
    the optimizer.

    The optimizer is rebuilt through `configure_optimizers`, so its state is reset as in the paper and the
    released code. Under DDP the model is wrapped again: DDP only reduces the gradients of parameters that
    required grad when it was built, and the UNet did not in phase 1.
    """

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if not module.update_phase(trainer.global_step):
            return
        trainer.strategy.setup_optimizers(trainer)
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy):
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()
        log.info("phase 2 from step %d: training %s, new optimizer", trainer.global_step, module.trainable)
