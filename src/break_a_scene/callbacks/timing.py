"""How long each phase took, in the run's log and in its loggers."""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

from break_a_scene.run_view import CallbackView

log = logging.getLogger(__name__)


class PhaseTimer(L.Callback):
    """Wall time of each phase and of the training loop, logged when training ends. The GPU is waited for
    once, at the end (not per step), so the timing costs the run nothing."""

    def __init__(self):
        self.phases: dict[int, list[float]] = {}  # phase -> [start, end, steps]

    def on_train_start(self, trainer: L.Trainer, module: CallbackView) -> None:
        self.phases = {}

    def on_train_batch_start(self, trainer: L.Trainer, module: CallbackView, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        phase = module.facts.phase_at(trainer.global_step)  # callbacks run before the module moves to it
        if phase not in self.phases:
            for record in self.phases.values():
                record[1] = min(record[1], now)
            self.phases[phase] = [now, float("inf"), 0]
        self.phases[phase][2] += 1

    def on_train_end(self, trainer: L.Trainer, module: CallbackView) -> None:
        if not self.phases:
            return
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        now = time.perf_counter()
        parts, metrics = [], {}
        for phase, (start, end, steps) in sorted(self.phases.items()):
            seconds = min(end, now) - start
            parts.append(f"phase {phase} {seconds:.1f} s for {steps} steps ({steps / seconds:.2f} steps/s)")
            metrics[f"time/phase{phase}_s"] = seconds
        total = now - min(start for start, _, _ in self.phases.values())
        metrics["time/training_loop_s"] = total
        if trainer.is_global_zero:
            log.info("training loop %.1f s: %s", total, ", ".join(parts))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
