"""The progress bar turns the losses into numbers on logging steps only, and shows the last ones between."""

import lightning as L

from break_a_scene.callbacks import ProgressBar
from break_a_scene.training import build_run
from tests.helpers import FAST, compose_config


class Probe(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        bar = next(c for c in trainer.callbacks if isinstance(c, ProgressBar))
        self.rows.append((trainer.global_step, bar._shown_at, bar._shown["loss"], float(outputs["loss"])))


def fit_with(probe: L.Callback, tmp_path, scene_dir, phase1_steps: int, phase2_steps: int) -> None:
    cfg = compose_config("train", [
        *FAST, f"data.scene.folder={scene_dir}", "trainer.enable_progress_bar=true", "trainer.log_every_n_steps=2",
        f"method.phase1_steps={phase1_steps}", f"method.phase2_steps={phase2_steps}",
    ], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)


def test_progress_bar_reads_the_losses_on_logging_steps_only(tmp_path, scene_dir):
    probe = Probe()
    fit_with(probe, tmp_path, scene_dir, 5, 0)
    assert [(step, read_at) for step, read_at, _, _ in probe.rows] == [(1, 1), (2, 2), (3, 2), (4, 4), (5, 5)]
    losses = {step: loss for step, _, _, loss in probe.rows}
    assert [shown for _, _, shown, _ in probe.rows] == [losses[1], losses[2], losses[2], losses[4], losses[5]]
    assert losses[2] != losses[3]


class LoggedLoss(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append((float(trainer.callback_metrics["loss"]), float(outputs["loss"])))


def test_losses_are_logged_on_logging_steps_and_the_first_and_last_only(tmp_path, scene_dir):
    """Lightning's `log` costs most of a millisecond a value on the CPU: the step logs only what a logger writes
    (every log_every_n_steps) and what the progress bar shows (the first and the last step)."""
    probe = LoggedLoss()
    fit_with(probe, tmp_path, scene_dir, 3, 2)
    losses = [loss for _, loss in probe.rows]
    assert [logged for logged, _ in probe.rows] == [losses[0], losses[1], losses[1], losses[3], losses[4]]
