"""A sweep's launcher checked before it starts: the SLURM launcher (submitit) off a cluster would fail deep in
submitit with a traceback, after the sweep folder is made."""

from __future__ import annotations

import shutil

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from break_a_scene.cli.run_folder import exit_with


class LauncherCheck(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if target.endswith("SlurmLauncher") and shutil.which("srun") is None:
            choice = config.hydra.runtime.choices.get("hydra/launcher", "the SLURM launcher")
            exit_with(f"hydra/launcher={choice} submits each trial to SLURM, and this machine has no `srun` (it is "
                      f"not a SLURM cluster's node); run the command on the cluster's login node, or leave "
                      f"hydra/launcher out to run the trials here one after another (hydra/launcher=local_parallel "
                      f"runs several at once).")
