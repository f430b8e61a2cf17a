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
    """The job's overrides ("variant=no_phase1,seed=1"), or the task name when there are none."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    return hydra.job.override_dirname or hydra.job.name


def register_resolvers() -> None:
    """`${bas.asset:scenes/coffee}`: a file shipped with the package; `${bas.sweep_name:}` and
    `${bas.job_name:}` for naming W&B runs. (The evaluation adds its own: `evaluation.benchmark_sets`.)"""
    for name, function in {"bas.asset": lambda rel: str(ASSETS_DIR / rel), "bas.sweep_name": _sweep_name,
                           "bas.job_name": _job_name}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


def compose(config_name: str, overrides: list[str], output_dir: str | Path):
    """Compose a config in-process as the entry point would, with its outputs going to `output_dir`
    (for tests, benchmarks and sweeps run from Python)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path(output_dir).parent)
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg
