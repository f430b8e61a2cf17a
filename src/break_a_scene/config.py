"""Where the Hydra configs live, and the resolvers they use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def config_dir() -> str:
    """`conf/` of the repository (or $BREAK_A_SCENE_CONF for an installed package used elsewhere)."""
    override = os.environ.get("BREAK_A_SCENE_CONF")
    if override:
        return str(Path(override).resolve())
    return str(PACKAGE_DIR.parents[1] / "conf")


def _sweep_name() -> str | None:
    """The multirun's folder name (its date), so W&B groups a sweep's runs; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None


def _job_name() -> str:
    """The job's overrides ("experiment=no_phase1,seed=1"), or the task name when there are none."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    return hydra.job.override_dirname or hydra.job.name


def register_resolvers() -> None:
    """`${bas.asset:scenes/coffee}`: a file shipped with the package; `${bas.sweep_name:}` and
    `${bas.job_name:}` for naming W&B runs."""
    for name, function in {"bas.asset": lambda rel: str(ASSETS_DIR / rel), "bas.sweep_name": _sweep_name,
                           "bas.job_name": _job_name}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
