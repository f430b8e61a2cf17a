"""Lightning's rich progress bar without a host synchronisation on every step."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Shows `metrics` (logged without `prog_bar`, so Lightning keeps them as tensors) as numbers only every
    `metrics_every_n_steps` optimizer steps and at the end, and the last values in between. Turning a
    tensor into a number waits for the GPU to finish the step; Lightning's own progress-bar metrics do that
    on every step. The bar itself moves every batch."""

    def __init__(self, metrics: list[str], metrics_every_n_steps: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.metrics = list(metrics)
        self.metrics_every_n_steps = max(1, metrics_every_n_steps)
        self._shown: dict[str, float] = {}
        self._shown_at: int | None = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        step = trainer.global_step
        due = step % self.metrics_every_n_steps == 0 or step >= trainer.max_steps
        if (due and step != self._shown_at) or self._shown_at is None:
            logged = trainer.callback_metrics
            self._shown = {name: float(logged[name]) for name in self.metrics if name in logged}
            self._shown_at = step
        return {**super().get_metrics(trainer, pl_module), **self._shown}
